"""InterIR: interpretable deep unfolding with explainable convolution for multi-degradation restoration."""
import math

import torch
import torch.nn.functional as F
from basicsr.utils.registry import ARCH_REGISTRY
from torch import nn

from interir_plugin.archs.econv import BatchGroupedConv2d, EConv, Pointwise, explainable_blocks
from interir_plugin.archs.physical_head import PhysicalHead, PresenceGated
from interir_plugin.utils.presence import PRESENCE_PARTS


def _mm(*mats):
    """Chain product of (batched) matrices in float32 with autocast off (the P/Q algebra never runs in bf16)."""
    with torch.autocast(mats[0].device.type, enabled=False):
        out = mats[0].float()
        for m in mats[1:]:
            out = out @ m.float()
    return out


def _t(m):
    return m.transpose(-1, -2)


def _factor(m, eps=1e-2):
    """``rownorm(m)`` (each row to unit L2 norm), then divided by the Schur bound ``sqrt(||.||_1 ||.||_inf)``.

    The second step is our addition: it bounds the spectral norm by 1 (exactly 1 for permutation matrices such
    as the identity, and for constant matrices), so ``P x Q`` never amplifies and the step size ``eta`` means
    the same at every ``h, w``. Without it ``||P||_2`` reaches ``sqrt(h)`` and the Jacobian term
    ``P^T P G Q Q^T`` grows like ``h * w`` (see docs/interir.md).
    """
    with torch.autocast(m.device.type, enabled=False):
        m = m.float()
        m = m * torch.rsqrt(m.pow(2).sum(-1, keepdim=True) + eps)  # rownorm
        a = m.abs()
        schur = a.sum(-1).amax(-1) * a.sum(-2).amax(-1)  # ||m||_inf * ||m||_1 >= ||m||_2^2
        return m * torch.rsqrt(schur + eps)[..., None, None]


def _icnr_(conv, scale):
    """ICNR initialisation (Aitken et al. 2017) of a convolution followed by ``PixelShuffle(scale)``.

    The ``scale^2`` sub-pixel kernels of every output channel start equal (copies of one default-initialised
    kernel, bias likewise), so at initialisation the shuffled output is a nearest-neighbour upsampling and carries
    no ``scale``-periodic grid; training is free to make them differ.
    """
    out_ch = conv.out_channels // scale ** 2
    with torch.no_grad():
        base = nn.Conv2d(conv.in_channels, out_ch, conv.kernel_size, padding=conv.padding)
        conv.weight.copy_(base.weight.repeat_interleave(scale ** 2, dim=0))
        conv.bias.copy_(base.bias.repeat_interleave(scale ** 2))


def _mlp(ch, hidden):
    """1x1 conv -> ReLU -> 1x1 conv (the prox value g1 and the generalised-derivative logits g2)."""
    return nn.Sequential(Pointwise(ch, hidden), nn.ReLU(inplace=True), Pointwise(hidden, ch))


class ImageStep(nn.Module):
    """One improved second-order semi-smooth Newton (ISN) step on ``x`` with ``P``, ``Q``, ``lambda`` fixed.

    Args:
        ch (int): Feature channels C.
        eb (dict): Keyword arguments of :func:`explainable_blocks` (num_blocks, num_experts, expand, ...).
        expand (int): Hidden width of g1, g2 is ``C * expand``.
        eta (float): Initial step size (``softplus`` of the learned raw value).
        data_term (bool): Keep the factorised data term ``P^T (P x Q - z) Q^T`` in ``G`` (and ``P^T P G Q Q^T`` in
            ``JG``); False is the ablation without it. Default: True.
        second_order (bool): Step along ``JG`` (ISN); False steps along ``G`` (first order, no EB_d, EB_e; the
            ablation). Default: True.
    """

    def __init__(self, ch, eb, expand, eta, data_term=True, second_order=True):
        super().__init__()
        self.data_term, self.second_order = data_term, second_order
        self.eb_a, self.eb_b, self.eb_c = (explainable_blocks(ch, **eb) for _ in range(3))
        if second_order:
            self.eb_d, self.eb_e = (explainable_blocks(ch, **eb) for _ in range(2))
        self.g1 = _mlp(ch, ch * expand)
        self.g2 = _mlp(ch, ch * expand)
        self.eta_raw = nn.Parameter(torch.tensor(math.log(math.expm1(eta))))

    def forward(self, x, z, lam, p, q, cond=None):
        s = self.eb_a(x, cond) + lam  # s = EB_a(x) + lambda
        u = self.g1(s)  # u = g1(s): prox value
        delta = torch.sigmoid(self.g2(s))  # Delta = sigmoid(g2(s)): generalised derivative of the prox, in [0,1]
        g = self.eb_b(self.eb_c(x, cond) + lam - u, cond)  # G = P^T(PxQ - z)Q^T + EB_b(EB_c(x) + lambda - u)
        if self.data_term:
            g = g + _mm(_t(p), _mm(p, x, q) - z, _t(q))  # + P^T (P x Q - z) Q^T
        step = g
        if self.second_order:
            step = self.eb_e(self.eb_d(g, cond) * (1 - delta), cond)  # JG = P^TP G QQ^T + EB_e(EB_d(G) (1 - Delta))
            if self.data_term:
                step = step + _mm(_t(p), p, g, q, _t(q))
        eta = F.softplus(self.eta_raw)  # eta_k = softplus(theta_k) > 0
        return x - eta * step, u, delta, eta  # x <- x - eta_k JG


class Stage(nn.Module):
    """One unfolding stage: image (ISN) step, left factor P, right factor Q, multiplier lambda.

    Args:
        ch (int): Feature channels C.
        eb (dict): Keyword arguments of :func:`explainable_blocks`.
        expand (int): Hidden width factor of g1, g2.
        eta (float): Initial step size of the image step.
        step: ``data_term``, ``second_order`` of :class:`ImageStep`. Without the data term the factors are not
            used, so the stage keeps ``P, Q`` as they are (no EB_P, EB_Q).
    """

    def __init__(self, ch, eb, expand, eta, **step):
        super().__init__()
        self.image = ImageStep(ch, eb, expand, eta, **step)
        if self.image.data_term:
            self.eb_p = explainable_blocks(2 * ch, **eb)
            self.eb_q = explainable_blocks(2 * ch, **eb)
        self.eb_lam = explainable_blocks(ch, **eb)

    def forward(self, x, z, lam, p, q, cond=None):
        x, u, delta, eta = self.image(x, z, lam, p, q, cond)  # 1. image: x <- x - eta J G(x)
        if not self.image.data_term:  # the ablation without P x Q: nothing would use new factors
            return x, lam + self.eb_lam(x, cond) - u, p, q, delta, eta
        m1, m2 = self.eb_p(torch.cat([_mm(x, q), z], 1), cond).chunk(2, 1)  # 2. (m1, m2) = split(EB_P(cat[x Q, z]))
        p = _factor(_mm(m1, _t(m2)))  # P = rownorm(m1 m2^T)
        n1, n2 = self.eb_q(torch.cat([_mm(p, x), z], 1), cond).chunk(2, 1)  # 3. (n1, n2) = split(EB_Q(cat[P x, z]))
        q = _factor(_mm(_t(n1), n2))  # Q = rownorm(n1^T n2)
        lam = lam + self.eb_lam(x, cond) - u  # 4. lambda <- lambda + EB_lambda(x) - u
        return x, lam, p, q, delta, eta


@ARCH_REGISTRY.register()
class InterIR(PresenceGated, nn.Module):
    r"""InterIR: physically interpretable multi-degradation restoration by deep unfolding and explainable convolution.

    Reconstruction from the paper's description (Gao, Lei, Xu, Dang, Ma, "Physically Interpretable
    Multi-Degradation Image Restoration via Deep Unfolding and Explainable Convolution", 2025); no official code
    exists, and where the paper is silent the choices are ours (listed in docs/interir.md).

    Degradation ``D = P(I) + N``; in feature space, per channel, ``min_{x,P,Q} 1/2 ||P x Q - z||^2 + R(v)`` s.t.
    ``v = F(x)``, solved by an augmented Lagrangian (multiplier lambda) whose stages alternate::

        lifting     z = Conv3x3(PixelUnshuffle_s(D)),  x_0 = z,  lambda_0 = Conv1x1(z) + z,
                    P_0 = rownorm(z z^T),  Q_0 = rownorm(z^T z)
        per stage k (num_stages times):
        1. image    s = EB_a(x) + lambda,  u = g1(s),  Delta = sigmoid(g2(s))
           (ISN)    G  = P^T (P x Q - z) Q^T + EB_b(EB_c(x) + lambda - u)
                    JG = P^T P G Q Q^T + EB_e(EB_d(G) * (1 - Delta))
                    x <- x - eta_k JG,  eta_k = softplus(theta_k)
        2. left     (m1, m2) = split(EB_P(cat[x Q, z])),  P = rownorm(m1 m2^T)
        3. right    (n1, n2) = split(EB_Q(cat[P x, z])),  Q = rownorm(n1^T n2)
        4. lambda   lambda <- lambda + EB_lambda(x) - u
        final       one more image step (own weights)
        head        I_k = ((D - A) / t_k + A - R_k) / G_k    for every stage and the final step: gain G,
                    transmission t, airlight A and additive layer R estimated from x_k (PhysicalHead),
                    or with head='residual' I_k = D + PixelShuffle_s(Conv3x3(x_k))

    ``P``, ``Q`` are per channel (``B x C x h x h``, ``B x C x w x w``, ``h = H/s``, ``w = W/s``); ``rownorm``
    L2-normalises rows and is followed by a Schur-bound rescale that keeps ``||P||_2, ||Q||_2 <= 1``.
    ``EB(x) = x + CA(EConv(GELU(EConv(x)))) + m tanh(Fq(x)/m)``, and every EConv folds
    ``K_b = W_0 + sum_m alpha_bm W_m + sum_p gamma_bp (theta_p * D_p)`` into one kernel per image
    (:mod:`interir_plugin.archs.econv`).

    Args:
        num_in_ch (int): Channels of the degraded input D. Default: 3.
        num_out_ch (int): Channels of the output. The global residual adds D itself when it equals
            ``num_in_ch``, else a 1x1 projection of D. Default: 3.
        num_feat (int): Feature channels C. Default: 32.
        unshuffle (int): Pixel-unshuffle factor s; H and W must be multiples of it (``size_multiple``). Default: 4.
        num_stages (int): Unfolding stages (the final image step comes on top). Default: 6.
        num_experts (int): Knowledge kernels M per EConv. Default: 4.
        expand (int): Hidden width factor of g1, g2 (``C * expand``) and of the frequency MLP. Default: 2.
        num_blocks (int): Explainable blocks chained wherever one EB is named. Default: 1.
        temperature (float): Softmax temperature tau of the expert mix. Default: 1.0.
        freq_bound (float): Bound m of every frequency branch. Default: 1.0.
        eta (float): Initial step size eta_k of every image step, in (0, 20). Default: 0.5.
        head (str): ``'physical'`` (:class:`PhysicalHead`: estimated maps, inverted) or ``'residual'`` (the
            global residual ``D + T(x_k)``, ICNR-initialised tail). Default: 'physical'.
        prior_gates (bool): EConvs keep the gated image-prior branch. Default: True.
        freq_branch (bool): Explainable blocks keep the frequency branch. Default: True.
        data_term (bool): Image steps keep the factorised data term ``P^T (P x Q - z) Q^T``. Default: True.
        second_order (bool): Image steps follow ``JG`` (ISN); False: ``G`` (first order). Default: True.
        The last four exist for the ablation (docs/ablation.md); the presets keep every part.
        recognise (bool): The physical head gates its maps by the presence of low light, haze, rain and snow
            (:class:`PhysicalHead`, :class:`DegradationRecogniser`); False for data with other degradations (the
            3- and 5-task protocols' noise and blur); must be False with ``head='residual'``. Default: True.
        route_by_presence (bool): Every EConv's router reads the presence gates the head uses (``B x 4``) beside its
            pooled features, so the expert mix and prior gates follow the degradations present. Needs ``recognise``.
            Default: False.
        streaks_by_active_set (bool): The head removes its streak layer (rain, snow) where each step's active set
            says: it is multiplied by the channel mean of ``1 - Delta``, upsampled. Default: False.

    ``forward(x)`` returns ``num_stages + 1`` images ordered first -> final, each ``B x num_out_ch x H x W``.
    ``forward(x, return_aux=True)`` returns ``(outputs, aux)``; ``aux[key][t]`` belongs to ``outputs[t]``:
    ``alpha`` (B x E_t x M, sums to 1), ``gamma`` (B x E_t x 5) for the ``E_t`` EConvs of that step in module
    order, ``eta`` (scalar), ``delta`` (B x C x h x w), ``P`` (B x C x h x h), ``Q`` (B x C x w x w) in force
    after the step, ``residual`` (B,) ``= ||P x Q - z||`` over C, h, w, and ``maps`` (the physical head's
    ``gain``, ``transmission`` (B x 1 x H x W), ``airlight`` (B x C_out x 1 x 1), ``layer`` (B x C_out x H x W); None
    with the residual head; with presence gates also ``streak`` (B x C_out x H x W, the rain and snow part of
    ``layer``) and ``presence`` (B x 4, the gates used)), and ``presence_logits`` (B x 4, the recogniser's; one
    entry, not per stage; None without a recogniser).

    ``forward(x, presence=targets)`` (training, teacher forcing): the head's gates are ``targets`` (``B x 4`` in
    [0, 1], e.g. :func:`presence_targets` of the batch's labels) instead of the recogniser's decision, and the
    call returns ``(outputs, presence_logits)`` so that the trainer can fit the recogniser
    (``UnfoldingRestorationModel`` does, ``train.presence_weight``).
    """

    def __init__(self, num_in_ch=3, num_out_ch=3, num_feat=32, unshuffle=4, num_stages=6, num_experts=4, expand=2,
                 num_blocks=1, temperature=1.0, freq_bound=1.0, eta=0.5, head='physical', prior_gates=True,
                 freq_branch=True, data_term=True, second_order=True, recognise=True, route_by_presence=False,
                 streaks_by_active_set=False):
        super().__init__()
        for key, value, low in (('num_in_ch', num_in_ch, 1), ('num_out_ch', num_out_ch, 1), ('num_feat', num_feat, 1),
                                ('unshuffle', unshuffle, 1), ('num_stages', num_stages, 0), ('expand', expand, 1),
                                ('num_blocks', num_blocks, 1), ('num_experts', num_experts, 1)):
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                raise ValueError(f'InterIR: {key} must be an int >= {low}, got {value!r}')
        if isinstance(eta, bool) or not isinstance(eta, (int, float)) or not 0 < eta < 20:
            raise ValueError(f'InterIR: eta must be a number in (0, 20), got {eta!r}')
        for key, value in (('prior_gates', prior_gates), ('freq_branch', freq_branch), ('data_term', data_term),
                           ('second_order', second_order), ('recognise', recognise),
                           ('route_by_presence', route_by_presence), ('streaks_by_active_set', streaks_by_active_set)):
            if not isinstance(value, bool):
                raise ValueError(f'InterIR: {key} must be true or false, got {value!r}')
        if head not in ('physical', 'residual'):
            raise ValueError(f"InterIR: head must be 'physical' or 'residual', got {head!r}")
        if recognise and head != 'physical':
            raise ValueError("InterIR: recognise=True needs head='physical' (the residual head has no maps to gate)")
        if route_by_presence and not recognise:
            raise ValueError('InterIR: route_by_presence=True needs recognise=True (it routes by the presence gates)')
        if streaks_by_active_set and head != 'physical':
            raise ValueError("InterIR: streaks_by_active_set=True needs head='physical' (its streak layer)")
        self.route_by_presence, self.streaks_by_active_set = route_by_presence, streaks_by_active_set
        self.head_type = head
        self.size_multiple = unshuffle
        c, s = num_feat, unshuffle
        eb = dict(num_blocks=num_blocks, num_experts=num_experts, expand=expand, temperature=temperature,
                  freq_bound=freq_bound, priors=prior_gates, freq=freq_branch,
                  cond_dim=len(PRESENCE_PARTS) if route_by_presence else 0)
        self.lift = nn.Sequential(nn.PixelUnshuffle(s), BatchGroupedConv2d(num_in_ch * s * s, c, 3, 1, 1))
        self.lam_init = Pointwise(c, c)
        step = dict(data_term=data_term, second_order=second_order)
        self.stages = nn.ModuleList(Stage(c, eb, expand, eta, **step) for _ in range(num_stages))
        self.final = ImageStep(c, eb, expand, eta, **step)
        self.skip = nn.Identity() if num_in_ch == num_out_ch else nn.Conv2d(num_in_ch, num_out_ch, 1)
        if head == 'physical':
            self.head = PhysicalHead(c, num_out_ch, s, recognise)
        else:
            self.tail = nn.Sequential(nn.Conv2d(c, num_out_ch * s * s, 3, 1, 1), nn.PixelShuffle(s))
            _icnr_(self.tail[0], s)

    def forward(self, x, return_aux=False, presence=None):
        """Restore ``x`` (B x num_in_ch x H x W, H and W multiples of ``size_multiple``); see the class doc."""
        if x.dim() != 4 or x.shape[-2] % self.size_multiple or x.shape[-1] % self.size_multiple:
            raise ValueError(f'InterIR: input size {tuple(x.shape)} must be B x C x H x W with H and W multiples of '
                             f'size_multiple={self.size_multiple} (the model class pads)')
        if presence is not None and (self.head_type != 'physical' or tuple(presence.shape) != (x.shape[0], 4)):
            raise ValueError(f'InterIR: presence must be B x 4 = {(x.shape[0], 4)} and needs the physical head, got '
                             f'{tuple(presence.shape)} with head={self.head_type!r}')
        if not return_aux:
            outputs, aux = self._unfold(x, None, presence)
            return outputs if presence is None else (outputs, aux['presence_logits'])
        econvs = [[m for m in step.modules() if isinstance(m, EConv)] for step in (*self.stages, self.final)]
        for m in sum(econvs, []):
            m.keep_routing = True
        try:
            return self._unfold(x, econvs, presence)
        finally:
            for m in sum(econvs, []):
                m.keep_routing, m.routing = False, None

    def _unfold(self, d, econvs, presence):
        skip = self.skip(d)
        z = self.lift(d)  # z = Conv3x3(PixelUnshuffle_s(D))
        aux = {k: [] for k in ('alpha', 'gamma', 'eta', 'delta', 'P', 'Q', 'residual', 'maps')}
        aux['presence_logits'] = None
        if self.head_type == 'physical':  # cues of D and the gates: one for every output
            cues, aux['presence_logits'], presence = self.head.prepare(skip, presence)
        x, lam = z, self.lam_init(z) + z  # x_0 = z, lambda_0 = Conv1x1(z) + z
        p, q = _factor(_mm(z, _t(z))), _factor(_mm(_t(z), z))  # P_0 = rownorm(z z^T), Q_0 = rownorm(z^T z)
        cond = presence if self.route_by_presence else None  # every EConv routes by the degradations present
        outputs = []
        for t, step in enumerate((*self.stages, self.final)):
            if step is self.final:
                x, _, delta, eta = step(x, z, lam, p, q, cond)  # final image step
            else:
                x, lam, p, q, delta, eta = step(x, z, lam, p, q, cond)  # image, P, Q, lambda
            if self.head_type == 'physical':  # I_k = ((D - A) / t + A - R) / G, gated maps
                image, maps = self.head(skip, x, cues, presence, delta if self.streaks_by_active_set else None)
            else:
                image, maps = skip + self.tail(x), None  # I_k = D + T(x_k)
            outputs.append(image)
            if econvs is not None:
                aux['alpha'].append(torch.stack([m.routing[0] for m in econvs[t]], 1))
                aux['gamma'].append(torch.stack([m.routing[1] for m in econvs[t]], 1))
                aux['residual'].append((_mm(p, x, q) - z).flatten(1).norm(dim=1))  # ||P x Q - z||
                for key, value in (('eta', eta), ('delta', delta), ('P', p), ('Q', q), ('maps', maps)):
                    aux[key].append(value)
        return outputs, aux
