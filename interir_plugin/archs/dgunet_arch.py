"""DGUNet and DGUNet+: Mou, Wang, Zhang, "Deep Generalized Unfolding Networks for Image Restoration", CVPR 2022.

Proximal gradient descent unfolded into stages. Stage ``k`` takes a gradient step with a learned degradation
operator ``phi_k`` and its learned adjoint ``phit_k``,

    v_k = x_{k-1} - r_k * phit_k(phi_k(x_{k-1}) - y),        x_0 = y (the degraded input),

then a proximal step by a U-Net whose input is fused with the previous stage's features (merge block) and whose
encoder is fused with the previous stage's encoder and decoder maps (cross-stage feature fusion, CSFF). A
supervised attention module (SAM) turns the U-Net output into the stage image and the features handed on.

Module names and tensor shapes equal the official ones (MC-E/Deep-Generalized-Unfolding-Networks-for-Image-
Restoration), so an official ``.pth`` loads with ``strict=True`` once its ``module.`` prefix is stripped
(:func:`load_official_dgunet`, or BasicSR's ``path.pretrain_network_g`` with ``param_key_g: state_dict``).

Decisions where the port differs from the official code (outputs equal to 1e-4 on the reference vectors):

- ``forward`` returns the stage images first -> final (the official code returns them final first).
- The merge block's projection ``V (V^T V)^-1 V^T`` runs in float32 even under autocast and replaces the
  explicit inverse by a ridge-regularised solve ``(V^T V + mu I) X = V^T b`` with ``mu = 1e-5 * trace(V^T V) / 16``
  plus the smallest normal float32: it never fails on a singular basis (degenerate directions are shrunk to
  zero instead of raising), the solved system's condition number stays below about 1.6e6 so float32 is
  meaningful, and gradients stay bounded. On the reference vectors this moves outputs by at most 2.3e-6. The
  solve is ``torch.linalg.solve_ex`` (no error check, so no host synchronisation per merge block on a GPU).
- Every block owns its PReLU. The official code shares one PReLU among many blocks (a Python default argument
  and a per-network ``act``) yet stores it under every block's key with the same value, so separate PReLUs load
  official checkpoints exactly; after fine-tuning they may differ, which the official layout can also store.
- DGUNet's ``basic.concat12`` conv is never used by the official forward; it is kept, under its key and shape,
  as a non-trainable buffer so official checkpoints load strictly, while the optimiser and DDP (which fails on
  parameters without gradient) never see it.
- ``in_c``/``out_c`` are honoured (the official code hard-codes 3 channels); they must be equal, because the
  unfolded estimates live in the input's space (``x_0 = y``, ``phi`` is a residual map, outputs are ``y`` plus
  a residual). Official checkpoints are 3-channel. The official ``num_cab`` (ignored there) is not accepted,
  nor is DGUNet+'s ``scale_orsnetfeats`` (ignored there too); ``depth`` is honoured by both variants.
"""
from types import SimpleNamespace

import torch
from basicsr.utils.registry import ARCH_REGISTRY
from torch import nn
from torch.nn import functional as F

from interir_plugin.utils.checkpoint import load_weights

#: hidden width of the learned degradation operators phi / phi^T (a constant of the official code)
GDM_FEATS = 64
#: number of basis maps spanning the merge block's subspace (a constant of the official code)
SUBSPACE_DIM = 16
#: relative ridge weight of the merge block's projection, times the mean eigenvalue of V^T V
RIDGE = 1e-5

#: official module name of each role of stage ``k`` (``a = k - 1``, ``b = k + 1``)
_NAMES = {
    'step': 'r{a}', 'phi': 'phi_{a}', 'phit': 'phit_{a}', 'shallow': 'shallow_feat{k}', 'encoder': 'stage{k}_encoder',
    'decoder': 'stage{k}_decoder', 'sam': 'sam{k}{b}', 'merge': 'merge{a}{k}', 'concat': 'concat{a}{k}',
}


def _name(role, k):
    return _NAMES[role].format(a=k - 1, k=k, b=k + 1)


def _conv(in_ch, out_ch, kernel_size, bias):
    """Convolution with 'same' padding."""
    return nn.Conv2d(in_ch, out_ch, kernel_size, padding=kernel_size // 2, bias=bias)


class _DegradationOperator(nn.Module):
    """Learned operator of the gradient step (phi or phi^T): ``x + conv3x3(PReLU(conv3x3(x)))``, with biases."""

    def __init__(self, num_ch):
        super().__init__()
        self.body = nn.Sequential(_conv(num_ch, GDM_FEATS, 3, True), nn.PReLU(), _conv(GDM_FEATS, num_ch, 3, True))

    def forward(self, x):
        return x + self.body(x)


class _ChannelAttention(nn.Module):
    """Squeeze-and-excitation: global mean -> 1x1 conv -> ReLU -> 1x1 conv -> sigmoid gate."""

    def __init__(self, num_feat, reduction, bias):
        super().__init__()
        self.conv_du = nn.Sequential(
            nn.Conv2d(num_feat, num_feat // reduction, 1, bias=bias), nn.ReLU(inplace=True),
            nn.Conv2d(num_feat // reduction, num_feat, 1, bias=bias), nn.Sigmoid())

    def forward(self, x):
        return x * self.conv_du(x.mean((2, 3), keepdim=True))


class _CAB(nn.Module):
    """Channel attention block: ``x + CA(conv(PReLU(conv(x))))``."""

    def __init__(self, num_feat, kernel_size, reduction, bias):
        super().__init__()
        self.CA = _ChannelAttention(num_feat, reduction, bias)  # registered first, like the official key order
        self.body = nn.Sequential(
            _conv(num_feat, num_feat, kernel_size, bias), nn.PReLU(), _conv(num_feat, num_feat, kernel_size, bias))

    def forward(self, x):
        return x + self.CA(self.body(x))


def _shallow_feat(num_ch, num_feat, kernel_size, reduction, bias):
    """Image -> features: a convolution, then a channel attention block."""
    return nn.Sequential(_conv(num_ch, num_feat, kernel_size, bias), _CAB(num_feat, kernel_size, reduction, bias))


class _UNetConvBlock(nn.Module):
    """``lrelu(conv(lrelu(HIN(conv(x))))) + conv1x1(x)``, then optional CSFF and a stride-2 downsampling.

    Args:
        in_size (int): Input channels.
        out_size (int): Output channels.
        downsample (bool): End with a 4x4 stride-2 conv and also return the map before it.
        use_csff (bool): Fuse the previous stage's encoder and decoder maps (only with ``downsample``).
        use_hin (bool): Half instance norm: normalise the first ``out_size // 2`` channels (affine).
    """

    def __init__(self, in_size, out_size, downsample, use_csff, use_hin):
        super().__init__()
        self.identity = nn.Conv2d(in_size, out_size, 1)
        self.conv_1 = nn.Conv2d(in_size, out_size, 3, padding=1)
        self.conv_2 = nn.Conv2d(out_size, out_size, 3, padding=1)
        if use_csff:
            self.csff_enc = nn.Conv2d(out_size, out_size, 3, padding=1)
            self.csff_dec = nn.Conv2d(in_size, out_size, 3, padding=1)
            self.phi = nn.Conv2d(out_size, out_size, 3, padding=1)
            self.gamma = nn.Conv2d(out_size, out_size, 3, padding=1)
        self.norm = nn.InstanceNorm2d(out_size // 2, affine=True) if use_hin else None
        self.downsample = nn.Conv2d(out_size, out_size, 4, stride=2, padding=1, bias=False) if downsample else None

    def forward(self, x, enc=None, dec=None):
        out = self.conv_1(x)
        if self.norm is not None:
            half = self.norm.num_features
            out = torch.cat([self.norm(out[:, :half]), out[:, half:]], 1)
        out = F.leaky_relu(self.conv_2(F.leaky_relu(out, 0.2)), 0.2) + self.identity(x)
        if enc is not None:  # CSFF: s = lrelu(enc' + dec'); out * sigmoid(phi(s)) + gamma(s) + out
            s = F.leaky_relu(self.csff_enc(enc) + self.csff_dec(dec), 0.1)
            out = out * torch.sigmoid(self.phi(s)) + self.gamma(s) + out
        if self.downsample is None:
            return out
        return self.downsample(out), out


class _Encoder(nn.Module):
    """Three down blocks of widths ``n_feat + i * scale`` and a bottom block; returns (skips, bottom)."""

    def __init__(self, n_feat, scale_unetfeats, csff, levels=3):
        super().__init__()
        widths = [n_feat + scale_unetfeats * i for i in range(levels + 1)]
        self.body = nn.ModuleList([_UNetConvBlock(widths[i], widths[i + 1], True, csff, True) for i in range(levels)])
        self.body.append(_UNetConvBlock(widths[-1], widths[-1], False, False, True))

    def forward(self, x, enc=None, dec=None):
        skips = []
        for i, block in enumerate(self.body[:-1]):
            # level i fuses the previous stage's encoder map i and its decoder map of the same resolution
            x, skip = block(x, None if enc is None else enc[i], None if dec is None else dec[-i - 1])
            skips.append(skip)
        return skips, self.body[-1](x)


class _UNetUpBlock(nn.Module):
    """2x2 stride-2 transposed conv, concatenation with the skip, conv block without norm."""

    def __init__(self, in_size, out_size):
        super().__init__()
        self.up = nn.ConvTranspose2d(in_size, out_size, 2, stride=2)
        self.conv_block = _UNetConvBlock(out_size * 2, out_size, False, False, False)

    def forward(self, x, skip):
        return self.conv_block(torch.cat([self.up(x), skip], 1))


class _Decoder(nn.Module):
    """Three up blocks, deepest first; each skip passes a 3x3 conv first. Returns the maps, coarsest first."""

    def __init__(self, n_feat, scale_unetfeats, levels=3):
        super().__init__()
        widths = [n_feat + scale_unetfeats * i for i in range(levels + 1)]
        self.body = nn.ModuleList([_UNetUpBlock(widths[i + 1], widths[i]) for i in reversed(range(levels))])
        self.skip_conv = nn.ModuleList([nn.Conv2d(widths[i + 1], widths[i], 3, padding=1)
                                        for i in reversed(range(levels))])

    def forward(self, x, skips):
        outs = []
        for up, skip_conv, skip in zip(self.body, self.skip_conv, reversed(skips)):
            x = up(x, skip_conv(skip))
            outs.append(x)
        return outs


class _SAM(nn.Module):
    """Supervised attention module (1x1 convs, no gate): features handed on and the stage image."""

    def __init__(self, n_feat, num_ch, bias):
        super().__init__()
        self.conv1 = nn.Conv2d(n_feat, n_feat, 1, bias=bias)
        self.conv2 = nn.Conv2d(n_feat, num_ch, 1, bias=bias)

    def forward(self, feat, img):
        return self.conv1(feat) + feat, self.conv2(feat) + img


def subspace_projection(basis, feat, ridge=RIDGE):
    """Project ``feat`` onto the span of the basis maps: ``V (V^T V + mu I)^-1 V^T feat``, in float32.

    The basis maps are L1-normalised over space first (eps 1e-6, as officially). ``mu = ridge * trace(V^T V) / K``
    plus the smallest normal float32 keeps the ``K x K`` system solvable for any basis, singular included; with
    a well-conditioned basis the result equals the exact projection to about ``ridge`` relative.

    Args:
        basis (Tensor): ``B x K x H x W`` basis maps.
        feat (Tensor): ``B x C x H x W`` features to project.
        ridge (float): Relative ridge weight. Default: :data:`RIDGE` (1e-5).

    Returns:
        Tensor: ``B x C x H x W`` float32 projection.
    """
    b, c, h, w = feat.shape
    with torch.autocast(device_type=feat.device.type, enabled=False):
        v_t = basis.float().flatten(2)  # V^T: B x K x HW
        v_t = v_t / (v_t.abs().sum(2, keepdim=True) + 1e-6)
        gram = v_t @ v_t.transpose(1, 2)  # V^T V: B x K x K
        eye = torch.eye(gram.shape[-1], dtype=gram.dtype, device=gram.device)
        mu = ridge * gram.diagonal(dim1=1, dim2=2).mean(-1) + torch.finfo(gram.dtype).tiny
        # solve_ex: the same LU solve as linalg.solve without its error check, a host sync per call on a GPU (the
        # ridge keeps the system non-singular, so there is nothing to check)
        coef = torch.linalg.solve_ex(gram + mu[:, None, None] * eye, v_t @ feat.float().flatten(2).transpose(1, 2))[0]
        return (v_t.transpose(1, 2) @ coef).transpose(1, 2).reshape(b, c, h, w)  # V coef: B x C x H x W


class _MergeBlock(nn.Module):
    """Fuse the current features with the previous stage's features projected onto a learned subspace."""

    def __init__(self, n_feat):
        super().__init__()
        self.conv_block = nn.Conv2d(n_feat * 2, n_feat, 3, padding=1)
        self.subnet = nn.Conv2d(n_feat * 2, SUBSPACE_DIM, 3, padding=1)

    def forward(self, x, bridge):
        projected = subspace_projection(self.subnet(torch.cat([x, bridge], 1)), bridge).to(bridge.dtype)
        return self.conv_block(torch.cat([x, projected], 1)) + x


class _UnusedConv(nn.Module):
    """Holds the weight of a conv the official DGUNet defines but never uses, as a buffer (see module docs)."""

    def __init__(self, in_ch, out_ch, kernel_size):
        super().__init__()
        self.register_buffer('weight', torch.zeros(out_ch, in_ch, kernel_size, kernel_size))


class _DGUNetBase(nn.Module):
    """The one implementation of DGUNet (``shared=True``) and DGUNet+ (``shared=False``); see the subclasses.

    Stages are numbered 1 .. ``depth + 2``. Every part of stage ``k`` has its official name (``_NAMES``); where
    the middle stages share weights, stages 2 .. ``depth + 1`` all use stage 2's parts, held in ``self.basic``.
    """

    size_multiple = 8  # three 2x downsamplings in each U-Net
    min_size = 16  # the U-Net bottom (1/8 scale) needs more than one pixel for its half-instance norm

    def __init__(self, shared, in_c, out_c, n_feat, scale_unetfeats, scale_orsnetfeats, kernel_size, reduction,
                 bias, depth):
        super().__init__()
        name = type(self).__name__
        for key, value in (('in_c', in_c), ('out_c', out_c), ('n_feat', n_feat), ('depth', depth),
                           ('kernel_size', kernel_size), ('reduction', reduction)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f'{name}: {key} must be a positive int, got {value!r}')
        if in_c != out_c:
            raise ValueError(f'{name}: in_c ({in_c}) must equal out_c ({out_c}): every stage estimate lives in the '
                             'input image space (x_0 = y, outputs are y plus a residual)')
        if kernel_size % 2 == 0:
            raise ValueError(f'{name}: kernel_size must be odd, got {kernel_size}')
        if n_feat < max(2, reduction):
            raise ValueError(f'{name}: n_feat ({n_feat}) must be >= 2 and >= reduction ({reduction})')
        if not isinstance(scale_unetfeats, int) or scale_unetfeats < 0:
            raise ValueError(f'{name}: scale_unetfeats must be a non-negative int, got {scale_unetfeats!r}')
        if shared and (not isinstance(scale_orsnetfeats, int) or scale_orsnetfeats < 0):
            raise ValueError(f'{name}: scale_orsnetfeats must be a non-negative int, got {scale_orsnetfeats!r}')
        self.in_c = in_c
        self.num_stages = depth + 2
        last = self.num_stages

        def parts(k):
            """Official name -> new module (or step size) of each part of stage k."""
            new = {'step': lambda: nn.Parameter(torch.tensor([0.5])),
                   'phi': lambda: _DegradationOperator(in_c),
                   'phit': lambda: _DegradationOperator(in_c),
                   'shallow': lambda: _shallow_feat(in_c, n_feat, kernel_size, reduction, bias),
                   'merge': lambda: _MergeBlock(n_feat),
                   'encoder': lambda: _Encoder(n_feat, scale_unetfeats, csff=k > 1),
                   'decoder': lambda: _Decoder(n_feat, scale_unetfeats),
                   'sam': lambda: _SAM(n_feat, in_c, bias)}
            roles = ['step', 'phi', 'phit', 'shallow'] + ['merge'] * (1 < k < last)
            roles += ['encoder', 'decoder', 'sam'] * (k < last)
            return {_name(role, k): new[role]() for role in roles}

        self.basic = nn.Module() if shared else None
        for k in range(1, last + 1):
            owner = self.basic if shared and 1 < k < last else self
            if owner is self or k == 2:  # shared middle stages are built once, as stage 2
                for key, part in parts(k).items():
                    setattr(owner, key, part)
        if shared:
            self.basic.concat12 = _UnusedConv(n_feat * 2, n_feat, kernel_size)
            # DGUNet's last stage fuses with a plain conv that widens to n_feat + scale_orsnetfeats
            setattr(self, _name('concat', last), _conv(n_feat * 2, n_feat + scale_orsnetfeats, kernel_size, bias))
            self.tail = _conv(n_feat + scale_orsnetfeats, out_c, kernel_size, bias)
        else:  # DGUNet+'s last stage fuses with a merge block
            setattr(self, _name('merge', last), _MergeBlock(n_feat))
            self.tail = _conv(n_feat, out_c, kernel_size, bias)

    def _stage(self, k):
        """The parts of stage ``k`` under their role names."""
        owner, j = (self.basic, 2) if self.basic is not None and 1 < k < self.num_stages else (self, k)
        roles = [r for r in _NAMES if hasattr(owner, _name(r, j))]
        return SimpleNamespace(**{role: getattr(owner, _name(role, j)) for role in roles})

    def forward(self, y):
        """Restore ``y``.

        Args:
            y (Tensor): ``B x in_c x H x W`` degraded images; ``H`` and ``W`` multiples of ``size_multiple`` (8)
                and at least ``min_size`` (16).

        Returns:
            list[Tensor]: ``depth + 2`` stage images ``B x out_c x H x W``, first -> final (final last).
        """
        if y.dim() != 4 or y.shape[1] != self.in_c:
            raise ValueError(f'{type(self).__name__} expects a B x {self.in_c} x H x W input, got {tuple(y.shape)}')
        h, w = y.shape[-2:]
        if h % self.size_multiple or w % self.size_multiple or min(h, w) < self.min_size:
            raise ValueError(f'{type(self).__name__} needs height and width that are multiples of '
                             f'{self.size_multiple} and at least {self.min_size}, got input size {h}x{w}; pad the '
                             'input (the model class does)')
        outs = []
        x, feat, enc, dec = y, None, None, None
        for k in range(1, self.num_stages + 1):
            p = self._stage(k)
            v = x - p.step * p.phit(p.phi(x) - y)  # gradient step with the learned operator
            f = p.shallow(v)
            if k == self.num_stages:
                break
            if k > 1:
                f = p.merge(f, feat)  # inter-stage information: previous SAM features via the subspace
            enc, bottom = p.encoder(f, enc, dec)  # proximal step: U-Net with cross-stage fusion
            dec = p.decoder(bottom, enc)
            feat, x = p.sam(dec[-1], v)
            outs.append(x)
        if self.basic is not None:
            f = p.concat(torch.cat([f, feat], 1))
        else:
            f = p.merge(f, feat)
        outs.append(self.tail(f) + y)
        return outs


@ARCH_REGISTRY.register()
class DGUNet(_DGUNetBase):
    """DGUNet: the middle stages 2 .. ``depth + 1`` share one set of weights (``basic.*``).

    Defaults are the official 'Deblurring & Denoising' configuration (17.33 M parameters officially); the
    'Deraining' one is ``n_feat=40, scale_unetfeats=20, scale_orsnetfeats=16``.

    Args:
        in_c (int): Input channels (honoured; official checkpoints are 3-channel). Default: 3.
        out_c (int): Output channels; must equal ``in_c``. Default: 3.
        n_feat (int): Feature width of the shallow features and the U-Nets' top level. Default: 80.
        scale_unetfeats (int): Width added per U-Net level. Default: 48.
        scale_orsnetfeats (int): Width added by the last stage's fusion conv before the tail. Default: 32.
        kernel_size (int): Kernel of the shallow-feature convs, the last fusion conv and the tail. Default: 3.
        reduction (int): Channel-attention reduction. Default: 4.
        bias (bool): Bias in the shallow-feature, attention, SAM, last fusion and tail convs. Default: False.
        depth (int): Number of shared middle stages; the net has ``depth + 2`` stages and outputs. Default: 5.
    """

    def __init__(self, in_c=3, out_c=3, n_feat=80, scale_unetfeats=48, scale_orsnetfeats=32, kernel_size=3,
                 reduction=4, bias=False, depth=5):
        super().__init__(True, in_c, out_c, n_feat, scale_unetfeats, scale_orsnetfeats, kernel_size, reduction,
                         bias, depth)


@ARCH_REGISTRY.register()
class DGUNetPlus(_DGUNetBase):
    """DGUNet+: every stage has its own weights.

    Defaults are the official 'Deblurring' configuration (69.57 M parameters officially); 'Denoising' is
    ``n_feat=80, scale_unetfeats=40``, 'Deraining' ``n_feat=40, scale_unetfeats=20``. The official
    ``scale_orsnetfeats`` is unused by DGUNet+ and therefore not accepted.

    Args:
        in_c (int): Input channels (honoured; official checkpoints are 3-channel). Default: 3.
        out_c (int): Output channels; must equal ``in_c``. Default: 3.
        n_feat (int): Feature width of the shallow features and the U-Nets' top level. Default: 96.
        scale_unetfeats (int): Width added per U-Net level. Default: 48.
        kernel_size (int): Kernel of the shallow-feature convs and the tail. Default: 3.
        reduction (int): Channel-attention reduction. Default: 4.
        bias (bool): Bias in the shallow-feature, attention, SAM and tail convs. Default: False.
        depth (int): Number of middle stages (own weights each); ``depth + 2`` stages and outputs. Default: 5.
    """

    def __init__(self, in_c=3, out_c=3, n_feat=96, scale_unetfeats=48, kernel_size=3, reduction=4, bias=False,
                 depth=5):
        super().__init__(False, in_c, out_c, n_feat, scale_unetfeats, None, kernel_size, reduction, bias, depth)


def load_official_dgunet(net, path, param_key='state_dict'):
    """Load an official DGUNet/DGUNet+ checkpoint (or one saved by BasicSR) into ``net`` strictly.

    Reads with ``weights_only=True``, takes ``checkpoint[param_key]`` (a bare state dict is taken as is), strips
    the DataParallel ``module.`` prefix and checks every key and shape before loading.

    Args:
        net (nn.Module): A :class:`DGUNet` or :class:`DGUNetPlus` (a DataParallel/DDP wrapper is unwrapped).
        path (str): Checkpoint file.
        param_key (str): Entry holding the weights: ``state_dict`` (official), ``params`` or ``params_ema``
            (BasicSR). Default: 'state_dict'.

    Returns:
        nn.Module: ``net``, loaded.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        KeyError: the checkpoint has no ``param_key`` entry and is not a bare state dict.
        CheckpointMismatchError: (a ``ValueError``) keys missing or unexpected, or shapes that differ; the message
            names them and the file.
    """

    def hint(state):
        variant = 'DGUNet' if any(k.startswith('basic.') for k in state) else 'DGUNetPlus'
        return (f'The file looks like a {variant} checkpoint; check network_g type, n_feat, scale_unetfeats, '
                'scale_orsnetfeats and depth.')

    return load_weights(net, path, param_key, strict=True, fallback=None, hint=hint)
