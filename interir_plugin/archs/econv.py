"""Explainable convolution (EConv) and the explainable block (EB) of InterIR, reusable by any arch.

``EConv`` is one 3x3 linear operator whose kernel is chosen per image (reconstruction of the "explainable
convolution" of Gao et al. 2025, see ``interir_arch.py``)::

    K_b = W_0 + sum_m alpha_bm W_m + sum_p gamma_bp (theta_p * D_p)
    alpha_b = softmax(MLP(GAP(x_b))[:M] / tau),   gamma_b = sigmoid(MLP(GAP(x_b))[M:])

``EB(x) = x + CA(EConv(GELU(EConv(x)))) + Fq(x)``: a spatial branch of two EConvs with channel attention and a
bounded frequency branch.
"""
import math

import torch
import torch.nn.functional as F
from torch import nn

#: Fixed image-prior operators D_p (3x3, applied to every channel): identity, horizontal and vertical central
#: differences, the 4-neighbour Laplacian and the centre difference (mean of the 8 neighbours minus the centre,
#: as in central-difference convolution).
PRIOR_NAMES = ('identity', 'grad_x', 'grad_y', 'laplacian', 'centre_difference')
_PRIORS = (
    ((0, 0, 0), (0, 1, 0), (0, 0, 0)),
    ((0, 0, 0), (-0.5, 0, 0.5), (0, 0, 0)),
    ((0, -0.5, 0), (0, 0, 0), (0, 0.5, 0)),
    ((0, 1, 0), (1, -4, 1), (0, 1, 0)),
    ((0.125, 0.125, 0.125), (0.125, -1, 0.125), (0.125, 0.125, 0.125)),
)


class EConv(nn.Module):
    """Input-adaptive 3x3 convolution whose branches fold into one kernel per image.

    Every branch is linear in ``x`` once the routing ``(alpha, gamma)`` is fixed, so the fused path builds
    ``K_b`` with two small matrix products and runs a single grouped convolution (``groups = B``); the unfused path
    computes the static, expert and prior branches separately and mixes their responses. Both give the same
    output (to float32 rounding). ``fused`` is a plain attribute, True by default in training *and* eval: the fold
    is exact and costs one convolution instead of ``1 + M`` plus the prior filters, so the unfused path is kept
    only as the branch-by-branch reference (tests, inspection, the fused-vs-unfused benchmark).

    Args:
        in_ch (int): Input channels.
        out_ch (int): Output channels.
        num_experts (int): Number M of learned knowledge kernels W_1..W_M. Default: 4.
        temperature (float): Softmax temperature tau of the expert mix. Default: 1.0.
        priors (bool): Keep the gated image-prior branch ``sum_p gamma_bp (theta_p * D_p)``; False drops it
            (``gamma`` is then ``B x 0``; the ablation of docs/ablation.md). Default: True.
        cond_dim (int): Length of a per-image condition vector ``c`` (``B x cond_dim``) that the router reads beside
            ``GAP(x)``: ``[alpha, gamma] = MLP([GAP(x), c])`` (InterIR passes its degradation evidence); 0: none.
            Default: 0.

    Attributes:
        fused (bool): Which path ``forward`` takes (see above). Default: True.
        keep_routing (bool): When True, ``forward`` stores ``(alpha, gamma)`` (float32, ``B x M`` and
            ``B x P``) in ``self.routing`` (the arch sets it for ``return_aux``). Default: False.
    """

    def __init__(self, in_ch, out_ch, num_experts=4, temperature=1.0, priors=True, cond_dim=0):
        super().__init__()
        if num_experts < 1:
            raise ValueError(f'EConv: num_experts must be >= 1, got {num_experts}')
        if temperature <= 0:
            raise ValueError(f'EConv: temperature must be > 0, got {temperature}')
        self.in_ch, self.out_ch, self.num_experts, self.temperature = in_ch, out_ch, num_experts, temperature
        num_priors = len(_PRIORS) if priors else 0
        bound = 1 / math.sqrt(9 * in_ch)  # the default Conv2d scale, for every kernel bank
        self.weight = nn.Parameter(torch.empty(out_ch, in_ch, 3, 3).uniform_(-bound, bound))  # W_0
        self.bias = nn.Parameter(torch.zeros(out_ch))
        self.experts = nn.Parameter(torch.empty(num_experts, out_ch, in_ch, 3, 3).uniform_(-bound, bound))  # W_m
        self.theta = nn.Parameter(torch.empty(num_priors, out_ch, in_ch).uniform_(-bound, bound))  # theta_p
        self.register_buffer('priors', torch.tensor(_PRIORS[:num_priors], dtype=torch.float32).view(num_priors, 3, 3),
                             persistent=False)  # D_p
        hidden = max(in_ch // 4, 8)
        # GELU, not ReLU: a router (or attention) MLP on pooled features is tiny, and a dead ReLU there would
        # freeze it for good
        self.cond_dim = cond_dim
        self.router = nn.Sequential(nn.Linear(in_ch + cond_dim, hidden), nn.GELU(),
                                    nn.Linear(hidden, num_experts + num_priors))
        self.fused = True
        self.keep_routing = False
        self.routing = None

    def route(self, x, cond=None):
        """Per-image expert mix ``alpha`` (B x M, sums to 1) and prior gates ``gamma`` (B x P, in (0, 1)) of ``x`` and,
        with ``cond_dim``, the condition ``cond`` (``B x cond_dim``)."""
        pooled = x.mean((2, 3))  # (mmengine counts no multiply-adds for a mean)
        if self.cond_dim:
            if cond is None or tuple(cond.shape) != (x.shape[0], self.cond_dim):
                raise ValueError(f'EConv: the router reads a condition of B x {self.cond_dim}, got '
                                 f'{None if cond is None else tuple(cond.shape)}')
            pooled = torch.cat([pooled, cond.to(pooled.dtype)], 1)
        logits = self.router(pooled).float()
        alpha = torch.softmax(logits[:, :self.num_experts] / self.temperature, dim=1)
        gamma = torch.sigmoid(logits[:, self.num_experts:])
        return alpha, gamma

    def kernels(self, alpha, gamma):
        """Folded kernels ``K_b`` (B x out x in x 3 x 3) for routing ``alpha``, ``gamma``.

        One product: the prior bank's kernels ``theta_p * D_p`` (P x out x in x 9, built from the parameters) are
        stacked under the experts, and ``K = W_0 + [alpha, gamma] @ [W_1..W_M; theta_1 D_1..theta_P D_P]`` is a
        single ``addmm`` (fewer, larger operators: each one is a parallel region when torch runs several threads).
        """
        dtype = self.weight.dtype
        priors = self.theta[..., None] * self.priors.to(dtype)[:, None, None, :].flatten(-2)  # theta_p D_p
        bank = torch.cat([self.experts.flatten(1), priors.flatten(1)])  # (M + P) x (out * in * 9)
        coef = torch.cat([alpha, gamma], 1).to(dtype)
        k = torch.addmm(self.weight.flatten()[None], coef, bank)  # W_0 + sum a W + sum g theta D
        return k.view(-1, self.out_ch, self.in_ch, 3, 3)

    def forward(self, x, cond=None):
        b, _, h, w = x.shape
        alpha, gamma = self.route(x, cond)
        if self.keep_routing:
            self.routing = (alpha, gamma)
        if self.fused:  # one grouped convolution, one kernel per image
            k = self.kernels(alpha, gamma).flatten(0, 1)
            bias = self.bias.repeat(b) if b > 1 else self.bias
            y = F.conv2d(x.reshape(1, b * self.in_ch, h, w), k, bias, padding=1, groups=b)
            return y.view(b, self.out_ch, h, w)
        # branch by branch: static kernel, expert responses mixed by alpha, prior responses gated by gamma
        y = F.conv2d(x, self.weight, self.bias, padding=1)
        experts = F.conv2d(x, self.experts.flatten(0, 1), padding=1).view(b, self.num_experts, self.out_ch, h, w)
        y = y + torch.einsum('bm,bmohw->bohw', alpha.to(experts.dtype), experts)
        if not len(self.priors):
            return y
        dp = self.priors[:, None].repeat(self.in_ch, 1, 1, 1)  # D_p on every channel: (in * P) x 1 x 3 x 3
        d = F.conv2d(x, dp.to(x.dtype), padding=1, groups=self.in_ch).view(b, self.in_ch, -1, h, w)
        prior = torch.einsum('poc,bcphw->bpohw', self.theta.to(d.dtype), d)  # theta_p mixes channels
        return y + torch.einsum('bp,bpohw->bohw', gamma.to(prior.dtype), prior)


class Pointwise(nn.Conv2d):
    """1x1 convolution computed as one matrix product over the channels (``W @ x`` on ``B x C x HW``).

    Parameters and state-dict keys are those of ``nn.Conv2d(in_ch, out_ch, 1)``. On CPU a GEMM straight on the
    NCHW memory avoids the layout reorders (or, single-threaded, the unfold copy) of the convolution kernels.

    Args:
        in_ch (int): Input channels.
        out_ch (int): Output channels.
    """

    def __init__(self, in_ch, out_ch):
        super().__init__(in_ch, out_ch, 1)

    def forward(self, x):
        b, c, h, w = x.shape
        weight, bias, x = self.weight.flatten(1), self.bias[:, None], x.reshape(b, c, h * w)
        # bias + W @ x_b, written row-major (C_out x HW): no transposed copy of the result. addmm at batch 1 (also
        # what mmengine's counter traces and counts), baddbmm with a broadcast weight otherwise
        y = torch.addmm(bias, weight, x[0])[None] if b == 1 else torch.baddbmm(bias, weight.expand(b, -1, -1), x)
        return y.view(b, self.out_channels, h, w)


class BatchGroupedConv2d(nn.Conv2d):
    """``nn.Conv2d`` that, on the CPU with more than one torch thread, runs a batch of B images as one image of B
    groups (the kernel repeated per group), the layout EConv's per-image kernels use anyway.

    Parameters, state-dict keys and outputs (to float32 rounding, gradients included) are those of ``nn.Conv2d``.
    Why: oneDNN's weight gradient of a batched convolution with few channels waited about 4 ms per call with 2
    threads on a busy 2-core machine (0.1-0.2 ms with 1 thread); as B groups of one image it took 0.9-1.3 ms for
    forward + backward, and the InterIR-S training step with the output head's convolutions swapped went from
    0.378 to 0.320 s on 2 threads (docs/training.md). With 1 thread, a batch of 1, groups, a padding mode other
    than zeros, or another device, it is the plain ``nn.Conv2d`` (there the grouped form is slower).
    """

    def forward(self, x):
        n = x.shape[0]
        if (n == 1 or self.groups != 1 or self.padding_mode != 'zeros' or x.device.type != 'cpu'
                or torch.get_num_threads() == 1):
            return super().forward(x)
        bias = None if self.bias is None else self.bias.repeat(n)
        y = F.conv2d(x.reshape(1, n * x.shape[1], *x.shape[2:]), self.weight.repeat(n, 1, 1, 1), bias, self.stride,
                     self.padding, self.dilation, n)
        return y.view(n, self.out_channels, *y.shape[2:])


class ChannelAttention(nn.Module):
    """Squeeze-and-excitation channel attention: ``x * sigmoid(W_2 GELU(W_1 GAP(x)))``.

    Args:
        ch (int): Channels.
        reduction (int): Hidden width is ``max(ch // reduction, 4)``. Default: 4.
    """

    def __init__(self, ch, reduction=4):
        super().__init__()
        hidden = max(ch // reduction, 4)
        self.body = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(ch, hidden, 1), nn.GELU(),
                                  nn.Conv2d(hidden, ch, 1), nn.Sigmoid())

    def forward(self, x):
        # the layers of ``body`` applied as matrix products on the pooled B x C vector: the same parameters and
        # values, but a 1x1 convolution on a 1x1 map took milliseconds per backward (oneDNN) with 2 threads
        pool, conv1, act, conv2, gate = self.body
        s = F.adaptive_avg_pool2d(x, 1).flatten(1)
        s = F.linear(act(F.linear(s, conv1.weight.flatten(1), conv1.bias)), conv2.weight.flatten(1), conv2.bias)
        return x * gate(s)[..., None, None]


class FrequencyBranch(nn.Module):
    """``Fq(x) = m tanh(irfft2(MLP([Re, Im] rfft2(x))) / m)``: a 1x1 channel MLP on the spectrum, bounded by m.

    The transform and the MLP run in float32 with autocast off (CPU FFTs have no bfloat16 kernels, and the
    spectrum's dynamic range wants float32); the result is cast back to the input's dtype.

    Args:
        ch (int): Channels.
        expand (int): Hidden width of the MLP is ``2 * ch * expand``. Default: 2.
        bound (float): The bound m. Default: 1.0.
    """

    def __init__(self, ch, expand=2, bound=1.0):
        super().__init__()
        if bound <= 0:
            raise ValueError(f'FrequencyBranch: bound (freq_bound) must be > 0, got {bound}')
        self.bound = bound
        hidden = 2 * ch * expand
        self.mlp = nn.Sequential(Pointwise(2 * ch, hidden), nn.GELU(), Pointwise(hidden, 2 * ch))

    def forward(self, x):
        h, w = x.shape[-2:]
        with torch.autocast(x.device.type, enabled=False):
            spec = torch.fft.rfft2(x.float(), norm='ortho')
            re, im = self.mlp(torch.cat([spec.real, spec.imag], 1)).chunk(2, 1)
            y = torch.fft.irfft2(torch.complex(re, im), s=(h, w), norm='ortho')
            y = torch.tanh(y) if self.bound == 1 else self.bound * torch.tanh(y / self.bound)  # m = 1: exact
        return y.to(x.dtype)


class ExplainableBlock(nn.Module):
    """``EB(x) = x + S(x) + Fq(x)`` with ``S = CA(EConv(GELU(EConv(x))))`` and the bounded frequency branch.

    Args:
        ch (int): Channels (input = output).
        num_experts (int): Experts per EConv. Default: 4.
        expand (int): Hidden expansion of the frequency MLP. Default: 2.
        temperature (float): EConv softmax temperature. Default: 1.0.
        freq_bound (float): Bound m of the frequency branch. Default: 1.0.
        priors (bool): EConvs with the gated prior branch. Default: True.
        freq (bool): Keep the frequency branch (False: ``EB(x) = x + S(x)``, the ablation). Default: True.
        cond_dim (int): Condition length of both EConvs' routers (:class:`EConv`). Default: 0.
    """

    def __init__(self, ch, num_experts=4, expand=2, temperature=1.0, freq_bound=1.0, priors=True, freq=True,
                 cond_dim=0):
        super().__init__()
        self.conv1 = EConv(ch, ch, num_experts, temperature, priors, cond_dim)
        self.act = nn.GELU()
        self.conv2 = EConv(ch, ch, num_experts, temperature, priors, cond_dim)
        self.attn = ChannelAttention(ch)
        self.freq = FrequencyBranch(ch, expand, freq_bound) if freq else None

    def forward(self, x, cond=None):
        y = x + self.attn(self.conv2(self.act(self.conv1(x, cond)), cond))
        return y if self.freq is None else y + self.freq(x)


class ExplainableBlocks(nn.ModuleList):
    """Explainable blocks applied in turn, each given the same routing condition (state-dict keys as an
    ``nn.Sequential`` of them)."""

    def forward(self, x, cond=None):
        for block in self:
            x = block(x, cond)
        return x


def explainable_blocks(ch, num_blocks=1, **kwargs):
    """``num_blocks`` chained explainable blocks of ``ch`` channels (kwargs go to :class:`ExplainableBlock`)."""
    return ExplainableBlocks(ExplainableBlock(ch, **kwargs) for _ in range(num_blocks))


def set_fused(module, fused=True):
    """Set ``fused`` on every :class:`EConv` inside ``module``; returns ``module``."""
    for m in module.modules():
        if isinstance(m, EConv):
            m.fused = fused
    return module
