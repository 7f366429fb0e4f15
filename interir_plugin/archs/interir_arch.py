"""InterIR: interpretable deep unfolding with explainable convolution for multi-degradation restoration."""
import math

import torch
import torch.nn.functional as F
from basicsr.utils.registry import ARCH_REGISTRY
from torch import nn

from interir_plugin.archs.econv import BatchGroupedConv2d, EConv, Pointwise, explainable_blocks


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


def _shifted(x, k, dim, pad_value):
    """The ``k`` windows of ``x`` shifted by ``-k // 2 .. k // 2`` along ``dim`` (-1 or -2), edges padded."""
    r, n = k // 2, x.shape[dim]
    x = F.pad(x, (r, r) if dim == -1 else (0, 0, r, r), value=pad_value)
    return [x.narrow(dim, i, n) for i in range(k)]


def max_filter(x, k):
    """``k x k`` maximum over each pixel's window (``F.max_pool2d(x, k, 1, k // 2)``, the same values): as shifted
    maxima, one axis at a time, 20-35x faster on the CPU than the pooling kernel for k = 3 to 9 at 8 x 3 x 64 x 64
    and 1 x 3 x 256 x 256."""
    for dim in (-1, -2):
        windows = _shifted(x, k, dim, float('-inf'))
        x = windows[0]
        for w in windows[1:]:
            x = torch.maximum(x, w)
    return x


def box_filter(x, k):
    """``k x k`` mean over each pixel's window inside the image (``F.avg_pool2d(x, k, 1, k // 2,
    count_include_pad=False)``, to float rounding): shifted sums, one axis at a time, divided by the window's
    pixel count; 2.5-8x faster on the CPU than the pooling kernel for k = 3 to 9 at those sizes."""
    for dim in (-1, -2):
        x = sum(_shifted(x, k, dim, 0.0))
        n = x.shape[dim]
        idx = torch.arange(n, device=x.device)
        count = (torch.clamp(idx + k // 2, max=n - 1) - torch.clamp(idx - k // 2, min=0) + 1).to(x.dtype)
        x = x / (count if dim == -1 else count[:, None])
    return x


def verticality(x, k=7):
    """How near-vertical the structure around each pixel of ``x`` (``B x 1 x H x W``) runs, in [-1, 1]: ``(J_xx -
    J_yy) / (J_xx + J_yy)`` of the structure tensor (central differences, ``k x k`` box means): 1 where every
    gradient is horizontal (a vertical line), 0 where the gradients have no preferred direction (or none), -1 for
    a horizontal line."""
    gx = F.pad(x[..., 2:] - x[..., :-2], (1, 1, 0, 0))
    gy = F.pad(x[..., 2:, :] - x[..., :-2, :], (0, 0, 1, 1))
    jxx, jyy = box_filter(gx * gx, k), box_filter(gy * gy, k)
    return (jxx - jyy) / (jxx + jyy + 1e-4)


#: The degradations the physical head recognises, in the order of its presence logits; each gates its own maps.
PRESENCE_PARTS = ('low', 'haze', 'rain', 'snow')


def presence_targets(label_names, device=None):
    """Presence targets (``B x 4``, 0/1 in :data:`PRESENCE_PARTS` order) of label names such as ``'low_haze_rain'``.

    A label made only of those parts (CDD-11's eleven) has its parts present and the others absent. Any other label
    (``'noise'``, ``'blur'``, a data set name) has all four on (the head may use every map) and a known-flag of 0,
    so it adds nothing to the recogniser's loss.

    Returns:
        tuple: ``(targets, known)``, float tensors ``B x 4`` and ``B``.
    """
    rows, known = [], []
    for name in label_names:
        parts = str(name).split('_')
        ok = all(part in PRESENCE_PARTS for part in parts)
        rows.append([float(part in parts) if ok else 1.0 for part in PRESENCE_PARTS])
        known.append(float(ok))
    return torch.tensor(rows, device=device), torch.tensor(known, device=device)


def presence_loss(logits, targets, known):
    """The recogniser's loss: binary cross-entropy of ``logits`` against ``targets`` (both ``B x 4``), averaged over
    the images whose label is ``known`` (``B``; :func:`presence_targets`); 0 when none is."""
    bce = F.binary_cross_entropy_with_logits(logits.float(), targets, reduction='none').mean(1)
    return (bce * known).sum() / known.sum().clamp_min(1)


class DegradationRecogniser(nn.Module):
    """Which of low light, haze, rain and snow the input ``D`` carries: four logits from 23 image statistics.

    The statistics (float32, full resolution): the mean and standard deviation of the mean-, min- and max-channel
    maps, the mean saturation ``max - min``, the colour noise (mean ``|h - mean_c h|`` of the high-pass
    ``h = D - box3(D)``: sensor noise differs between channels, rain, snow and edges mostly do not); at two scales
    (5, 9) the luminance's mean high-pass magnitude, its share of bright thin structure (``sigmoid((h - 0.08) /
    0.02)``) and the same share relative to the image's contrast (``h / (std + 0.02)``: haze attenuates streaks);
    the relative share of its white top-hat (7 x 7); of a rough dark-channel dehaze ``J`` of ``D`` (airlight: the
    brightest 7 x 7 dark-channel value), the mean, the mean max-channel and the colour noise (a veil hides low
    light and scales noise by ``t``: with them low light under haze went from 0.92 to 1.00 recognised on the test
    split); plus the head's five cue statistics (with the fifth, how near-vertical its bright thin structure runs,
    the held-out rain and snow images whose streaks went unrecognised fell from 46 / 40 / 40 to 36 / 16 / 23 of 96
    in three runs: :class:`PhysicalHead`). They are standardised
    (running statistics, as a batch norm without affine parameters) and fed to a two-layer MLP; the logits are
    scaled by 5. Trained by its own loss on the labels' parts (``UnfoldingRestorationModel``: ``presence_weight``,
    at ``presence_lr_scale`` times the network's learning rate), it is not trained through the gates.
    """

    num_stats = 23
    #: A part is decided present when its logit exceeds its threshold (low, haze, rain, snow). Haze needs 1 (a
    #: probability above 0.73): dehazing a clear photo that looks veiled (a flat grey sky or background) costs it
    #: 10-16 dB, leaving a hazy one as it is costs less. Decided on draws of new degradation parameters for the
    #: held-out photos (264 images, three demo models): mean PSNR over labels +0.15 / +0.22 / +0.27 dB, SSIM
    #: +0.005 to +0.007, snow +1.1 to +1.6 dB, haze missed in 0.5 % of hazy images (0 % at 0). Higher thresholds
    #: measured higher means on those photos (+0.4 dB at 2.5) but missed more haze (2.8 % at 2, 10.6 % at 3): not
    #: taken (docs/interir.md, "The haze decision").
    thresholds = (0.0, 1.0, 0.0, 0.0)

    def __init__(self, hidden=32, logit_scale=5.0):
        super().__init__()
        self.logit_scale = logit_scale
        self.norm = nn.BatchNorm1d(self.num_stats, affine=False)
        self.mlp = nn.Sequential(nn.Linear(self.num_stats, hidden), nn.GELU(), nn.Linear(hidden, len(PRESENCE_PARTS)))

    @staticmethod
    def statistics(d):
        """The 18 image statistics of ``d`` (``B x 18``, float32; any number of channels)."""
        with torch.autocast(d.device.type, enabled=False):
            d = d.float()
            lum, lo, hi = d.mean(1, keepdim=True), d.amin(1, keepdim=True), d.amax(1, keepdim=True)
            high = d - box_filter(d, 3)
            feats = [m.mean((2, 3)) for m in (lum, lo, hi)] + [m.std((2, 3)) for m in (lum, lo, hi)]
            feats += [(hi - lo).mean((2, 3)), 10 * (high - high.mean(1, keepdim=True)).abs().mean((1, 2, 3))[:, None]]
            contrast = lum.std((2, 3), keepdim=True) + 0.02  # haze lowers every contrast, streaks' too
            for k in (5, 9):
                h = lum - box_filter(lum, k)
                feats += [10 * h.abs().mean((2, 3)), 10 * torch.sigmoid((h - 0.08) / 0.02).mean((2, 3)),
                          10 * torch.sigmoid((h / contrast - 1) / 0.2).mean((2, 3))]
            tophat = lum + max_filter(max_filter(-lum, 7), 7)
            feats.append(10 * torch.sigmoid((tophat / contrast - 1) / 0.2).mean((2, 3)))
            # a rough dark-channel dehaze (airlight: the brightest dark-channel value) shows what a veil hides:
            # low light under haze, and sensor noise that haze scaled down by t
            dark = -max_filter(-lo, 7)
            air = dark.amax((2, 3), keepdim=True).clamp_min(0.1)
            j = ((d - air) / (1 - 0.95 * dark / air).clamp_min(0.1) + air).clamp(0, 1)
            j_high = j - box_filter(j, 3)
            feats += [j.mean((1, 2, 3))[:, None], j.amax(1).mean((1, 2))[:, None],
                      10 * (j_high - j_high.mean(1, keepdim=True)).abs().mean((1, 2, 3))[:, None]]
            return torch.cat(feats, 1)

    def decide(self, logits):
        """The presence gates (``B x 4``, 0 or 1) of ``logits``: each part's logit above its threshold."""
        return (logits > logits.new_tensor(self.thresholds)).float()

    def forward(self, d, cue_stats):
        """Presence logits (``B x 4``) of ``d`` given the head's cue statistics (``B x 5``)."""
        stats = torch.cat([self.statistics(d), cue_stats.float()], 1)
        # a batch of one cannot be standardised by itself: it uses the running statistics
        stats = F.batch_norm(stats, self.norm.running_mean, self.norm.running_var, training=self.training and
                             stats.shape[0] > 1, momentum=self.norm.momentum, eps=self.norm.eps)
        if self.training and stats.shape[0] > 1:
            self.norm.num_batches_tracked.add_(1)
        return self.logit_scale * self.mlp(stats)


class PhysicalHead(nn.Module):
    """Output head that estimates the composite's physical maps from features ``x`` and inverts them.

    The synthesiser (and the physics) compose low light, an additive layer (rain, snow, sensor noise) and haze as
    ``D = (J G + R) t + A (1 - t)``. The head inverts it, ``I = ((D - A) / t + A - R) / G``, with maps estimated
    from ``x`` (``B x C x h x w``, ``h = H / s``) and two classical cues of ``D`` at the network's resolution, the
    Retinex illumination ``L_D`` (local mean of the max-channel map) and the dark channel ``dc_D`` (local minimum
    of the min-channel map):

    - gain ``G = exp(-g)``, ``g = k_b (-log L_D) + conv_g``: under the Retinex low light ``J L^(gamma - 1)`` the
      observed illumination is ``L^gamma``, so ``-log G = (1 - 1 / gamma)(-log L_D)``: one per-image strength
      ``k_b`` plus a learned correction;
    - transmission ``t = exp(-tau)``, ``tau = k'_b (-log(1 - dc_D / A)) + conv_tau``: the dark-channel prior's
      ``t = 1 - dc_D / A`` with a per-image strength ``k'_b`` plus a learned correction, held at or above that
      bound (``1 - dc_D / A`` per cell, ``1 - min_c D_c / A_c`` per pixel): any smaller ``t`` makes ``J G + R``
      negative. Measured on MiniCDD's held-out split, without the bound the head over-dehazed lightly hazed grey
      photos (a quarter to half of their pixels below 0) and the labels with haze lost 1 to 3 dB;
    - airlight ``A`` (one value per channel, sigmoid), the strengths ``k_b, k'_b`` and an offset ``k_s`` of the
      streak weight's logit from one MLP on the pooled features and the five cue statistics;
    - additive layer ``R = R_streak + R_noise`` at full resolution: rain and snow add bright streaks and flakes,
      so ``R_streak = relu(PixelShuffle_s(Conv3x3(x))) + w_s TH_D >= 0`` with ``TH_D = D - opening_7(D)`` the
      white top-hat of ``D`` (its bright structures narrower than 7 pixels; opening = a 7 x 7 min then max
      filter); sensor noise has no local mean, so ``R_noise = w_n h + w'_n b`` with the high-pass ``h = D' -
      box5(D')`` and the band ``b = box5(D') - box9(D')`` (the noise that brightening amplifies reaches beyond
      the 5 x 5 scale: held-out SSIM +0.010 in two runs with the band) of ``D' = D - R_streak`` (``D`` without the
      streaks and flakes the head found: measured on ``D`` itself, a flake's edges were read as noise and came out
      as dark rings; held-out at 340 steps, two seeds: 15.95 / 15.79 -> 16.10 / 16.19 dB, SSIM 0.504 / 0.501 ->
      0.515 / 0.525, low_snow 15.7 -> 17.5 dB). Both layers are measured on ``D``, where haze has scaled them by
      ``t``, so the head subtracts them divided by ``t`` (held-out SSIM of low_haze 0.41-0.43 -> 0.51-0.52 with the
      division). ``w_s, w_n, w'_n`` in (0, 1) are ``sigmoid(up(Conv3x3(x)) + F([D, TH_D, h_D, V]) + (0, k_s,
      0))`` (``h_D = D - box5(D)``): logits estimated from ``x`` (bilinearly upsampled) plus a full-resolution
      correction ``F`` (two 3x3 layers, 8 channels) that sees whether a bright thin structure is a streak, a flake or
      the photo's own texture. Working on ``D``'s own detail gives the head the full-resolution structure that ``x``
      (``s^2 C_in`` values per cell lifted to ``C``) cannot carry.

    **Streaks run one way.** Rain falls within 25 degrees of vertical (the synthesiser's range; real rain too,
    short of a gale); a photo's bright thin structure (fur, spokes, highlights, edges) runs every way. ``V`` is the
    :func:`verticality` of the top-hat's channel mean ``TH = mean_c TH_D`` (7 x 7 structure tensor), one more input
    of ``F``, and ``S = 10 sum(TH V) / sum(TH)`` its top-hat-weighted mean over the image, one more cue statistic
    (for ``k_s`` and the recogniser). On MiniCDD's held-out split ``S`` is 1.2 to 6.6 on every image with rain and
    -1.3 to 1.7 on those with neither rain nor snow; a photo's own vertical structure can score as high (the top
    left of ``rocket``: 3.3), so ``S`` informs the decisions and does not make them. Held-out, the head without
    and with ``V, S, k_s`` side by side at 60 s each, seeds 10 / 11 / 12: 16.10 / 16.02 / 15.99 -> 16.35 / 16.37 /
    16.37 dB, SSIM 0.519 / 0.516 / 0.517 -> 0.531 / 0.540 / 0.533, rain 20.36 / 19.67 / 18.85 -> 21.41 / 20.65 /
    21.27; the streak gate missed 46 / 40 / 40 of the 96 images with rain or snow, then 36 / 16 / 23
    (docs/interir.md).

    **Presence gates.** ``p`` (``B x 4``, :data:`PRESENCE_PARTS`: low, haze, rain, snow) switches each map on or
    off: ``g`` and ``R_noise`` by low light (the synthesiser's noise comes with it), ``tau`` by haze, ``R_streak`` by
    rain or snow (``1 - (1 - p_rain)(1 - p_snow)``). With nothing present the head returns ``D`` itself, whatever
    its weights. In training ``p`` is the label's (teacher forcing); otherwise the :class:`DegradationRecogniser`'s
    decision (each logit above its threshold: haze 1, the others 0). Measured on MiniCDD's held-out split
    (docs/interir.md): without the gates the trained head applied the average tone correction of the mixture to
    every image and lost 2 to 3 dB on rain and snow; without ``R >= 0`` it brightened through ``R``; without the
    high-pass terms it could neither denoise nor remove streaks.

    ``g, tau`` are bounded to (-3, 3) by ``3 tanh(./3)`` and bilinearly upsampled. They are not held to the
    physical ``G, t <= 1``, so ``G`` and ``t`` are effective maps. The gain, transmission and streak convolutions
    start at zero (the streak one at 1e-3 noise, so the relu passes gradient), ``w_s, w_n`` at sigmoid(-3)
    (``F``'s last layer at zero): at initialisation the head is the identity but for a small high-pass term.

    Args:
        ch (int): Feature channels C.
        out_ch (int): Image channels.
        scale (int): The unshuffle factor s.
        recognise (bool): Gate the maps by presence (above). False: every map always on, no recogniser (for data
            whose degradations are not among the four). Default: True.
    """

    def __init__(self, ch, out_ch, scale, recognise=True):
        super().__init__()
        self.scale = scale
        # BatchGroupedConv2d: nn.Conv2d (same parameters) that stays fast with 2 CPU threads (econv.py)
        self.maps = nn.Sequential(BatchGroupedConv2d(ch + 2, ch, 3, 1, 1), nn.GELU(),
                                  BatchGroupedConv2d(ch, 2, 3, 1, 1))  # conv_g, conv_tau
        self.layer = nn.Sequential(BatchGroupedConv2d(ch, out_ch * scale * scale, 3, 1, 1), nn.PixelShuffle(scale))
        self.detail = BatchGroupedConv2d(ch, 3, 3, 1, 1)  # w_n, w_s, w'_n logits from x
        self.detail_full = nn.Sequential(BatchGroupedConv2d(3 * out_ch + 1, 8, 3, 1, 1), nn.GELU(),
                                         BatchGroupedConv2d(8, 3, 3, 1, 1))  # their correction from D, TH_D, h_D, V
        # k, k', the offset of w_s's logit, A logits
        self.globals = nn.Sequential(nn.Linear(ch + 5, ch), nn.GELU(), nn.Linear(ch, 3 + out_ch))
        self.recogniser = DegradationRecogniser() if recognise else None
        for layer in (self.maps[-1], self.layer[0], self.globals[-1], self.detail, self.detail_full[-1]):
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)
        nn.init.normal_(self.layer[0].weight, std=1e-3)
        nn.init.constant_(self.detail.bias, -3.0)
        nn.init.constant_(self.globals[-1].bias[3:], 1.4)  # A = sigmoid(1.4) = 0.8, the middle of the airlight range

    def cues(self, d):
        """What the head uses of ``d`` alone (float32), computed once for all stage outputs: ``log L_D`` and ``dc_D``
        (each ``B x 1 x h x w``: the log Retinex illumination and the dark channel), five statistics (``B x 5``: the
        means and standard deviations of both, and the streak statistic ``S``), and at full resolution the white
        top-hat ``TH_D`` and the correction ``F([D, TH_D, h_D, V])`` of the logits of ``w_n, w_s, w'_n`` (``B x 3 x H
        x W``)."""
        with torch.autocast(d.device.type, enabled=False):
            d, s = d.float(), self.scale
            light = box_filter(F.avg_pool2d(d.amax(1, keepdim=True), s), 3)
            log_light, dark = torch.log(light.clamp_min(1e-3)), -F.max_pool2d(-d.amin(1, keepdim=True), s)
            tophat = d + max_filter(max_filter(-d, 7), 7)  # D - opening_7(D) >= 0
            bright = tophat.mean(1, keepdim=True)
            vert = verticality(bright)  # V
            streakiness = 10 * (bright * vert).sum((2, 3)) / (bright.sum((2, 3)) + 1e-3)  # S
            stats = torch.cat([log_light.mean((2, 3)), log_light.std((2, 3)), dark.mean((2, 3)), dark.std((2, 3)),
                               streakiness], 1)
            detail_full = self.detail_full(torch.cat([d, tophat, d - box_filter(d, 5), vert], 1))
        return log_light, dark, stats, tophat, detail_full

    def prepare(self, d, presence=None):
        """What every stage output shares: ``(cues, logits, gates)`` of ``d``: its :meth:`cues`, the recogniser's
        logits (``B x 4``; None without a recogniser) and the gates the head uses: ``presence`` when given (teacher
        forcing), else the recogniser's decision (:meth:`DegradationRecogniser.decide`), else None (every map
        on)."""
        cues = self.cues(d)
        logits = None if self.recogniser is None else self.recogniser(d, cues[2])
        if presence is None and logits is not None:
            presence = self.recogniser.decide(logits)
        return cues, logits, presence

    def forward(self, d, x, cues=None, presence=None):
        """Restored image from the degraded input ``d`` and features ``x`` (``cues``: :meth:`cues` of ``d``, computed
        here if not given; ``presence``: ``B x 4`` gates in [0, 1], all on if None); also returns the maps."""
        log_light, dark, cue_stats, tophat, detail_full = self.cues(d) if cues is None else cues
        with torch.autocast(x.device.type, enabled=False):
            x, d = x.float(), d.float()
            p = torch.ones(d.shape[0], len(PRESENCE_PARTS), device=d.device) if presence is None else presence.float()
            p_low = p[:, 0, None, None, None]
            p_streak = 1 - (1 - p[:, 2, None, None, None]) * (1 - p[:, 3, None, None, None])
            stats = torch.cat([x.mean((2, 3)), cue_stats], 1)
            k_gain, k_t, k_s, a_logits = self.globals(stats).split([1, 1, 1, d.shape[1]], 1)
            airlight = torch.sigmoid(a_logits)[..., None, None]
            prior_t = -torch.log((1 - dark / airlight.mean(1, keepdim=True)).clamp_min(0.05))
            prior = torch.cat([k_gain[..., None, None] * -log_light, k_t[..., None, None] * prior_t], 1)
            log_inv = 3 * torch.tanh((prior + self.maps(torch.cat([x, log_light, dark], 1))) / 3)
            # t >= 1 - dc_D / A: a smaller t makes J G + R negative at the cell's darkest pixel
            log_inv = torch.cat([log_inv[:, :1], torch.minimum(log_inv[:, 1:], prior_t)], 1)
            log_inv = log_inv * p[:, :2, None, None]  # g by low light, tau by haze
            log_inv, weights = (F.interpolate(m, scale_factor=self.scale, mode='bilinear', align_corners=False)
                                for m in (log_inv, self.detail(x)))
            # w_n, w_s, w'_n; the image's k_s shifts w_s's logit alone (padded to (0, k_s, 0) over the channels)
            weights = torch.sigmoid(weights + F.pad(k_s[..., None, None], (0, 0, 0, 0, 1, 1)) + detail_full)
            inv_gain, inv_t = torch.exp(log_inv).split(1, 1)  # 1 / G, 1 / t
            # the same bound at every pixel (the upsampled t can cross a neighbouring cell's): J G + R >= 0
            inv_t = torch.minimum(inv_t, 1 / (1 - (d / airlight).amin(1, keepdim=True)).clamp_min(0.05))
            streak = p_streak * (F.relu(self.layer(x)) + weights[:, 1:2] * tophat)  # on D
            rest = d - streak  # D' = D - R_streak: the noise bands of D without its streaks and flakes
            box5 = box_filter(rest, 5)
            high, band = rest - box5, box5 - box_filter(rest, 9)
            streak = streak * inv_t  # R_streak = R_D / t
            layer = streak + p_low * (weights[:, :1] * high + weights[:, 2:] * band) * inv_t
            image = ((d - airlight) * inv_t + airlight - layer) * inv_gain
        maps = {'gain': 1 / inv_gain, 'transmission': 1 / inv_t, 'airlight': airlight, 'layer': layer,
                'streak': streak, 'presence': p}
        return image, maps


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

    def forward(self, x, z, lam, p, q):
        s = self.eb_a(x) + lam  # s = EB_a(x) + lambda
        u = self.g1(s)  # u = g1(s): prox value
        delta = torch.sigmoid(self.g2(s))  # Delta = sigmoid(g2(s)): generalised derivative of the prox, in [0,1]
        g = self.eb_b(self.eb_c(x) + lam - u)  # G = P^T(PxQ - z)Q^T + EB_b(EB_c(x) + lambda - u)
        if self.data_term:
            g = g + _mm(_t(p), _mm(p, x, q) - z, _t(q))  # + P^T (P x Q - z) Q^T
        step = g
        if self.second_order:
            step = self.eb_e(self.eb_d(g) * (1 - delta))  # JG = P^TP G QQ^T + EB_e(EB_d(G) (1 - Delta))
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

    def forward(self, x, z, lam, p, q):
        x, u, delta, eta = self.image(x, z, lam, p, q)  # 1. image: x <- x - eta J G(x)
        if not self.image.data_term:  # the ablation without P x Q: nothing would use new factors
            return x, lam + self.eb_lam(x) - u, p, q, delta, eta
        m1, m2 = self.eb_p(torch.cat([_mm(x, q), z], 1)).chunk(2, 1)  # 2. (m1, m2) = split(EB_P(cat[x Q, z]))
        p = _factor(_mm(m1, _t(m2)))  # P = rownorm(m1 m2^T)
        n1, n2 = self.eb_q(torch.cat([_mm(p, x), z], 1)).chunk(2, 1)  # 3. (n1, n2) = split(EB_Q(cat[P x, z]))
        q = _factor(_mm(_t(n1), n2))  # Q = rownorm(n1^T n2)
        lam = lam + self.eb_lam(x) - u  # 4. lambda <- lambda + EB_lambda(x) - u
        return x, lam, p, q, delta, eta


class PresenceGated:
    """For networks whose :class:`PhysicalHead` is ``self.head``: whether it gates by presence, and the optimizer
    groups that give its recogniser a larger learning rate (``UnfoldingRestorationModel``, ``bench_recipe.py``)."""

    @property
    def recognises(self):
        """Whether the head gates its maps by degradation presence (``forward(x, presence=...)`` is accepted)."""
        return isinstance(getattr(self, 'head', None), PhysicalHead) and self.head.recogniser is not None

    def presence_param_groups(self, params, lr, lr_scale):
        """``params`` as two optimizer groups, the recogniser's at ``lr * lr_scale`` (one group when it has none)."""
        params = list(params)
        if not self.recognises:
            return [{'params': params, 'lr': lr}]
        own = {id(p) for p in self.head.recogniser.parameters()}
        return [{'params': [p for p in params if id(p) not in own], 'lr': lr},
                {'params': [p for p in params if id(p) in own], 'lr': lr * lr_scale}]


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
                 freq_branch=True, data_term=True, second_order=True, recognise=True):
        super().__init__()
        for key, value, low in (('num_in_ch', num_in_ch, 1), ('num_out_ch', num_out_ch, 1), ('num_feat', num_feat, 1),
                                ('unshuffle', unshuffle, 1), ('num_stages', num_stages, 0), ('expand', expand, 1),
                                ('num_blocks', num_blocks, 1), ('num_experts', num_experts, 1)):
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                raise ValueError(f'InterIR: {key} must be an int >= {low}, got {value!r}')
        if isinstance(eta, bool) or not isinstance(eta, (int, float)) or not 0 < eta < 20:
            raise ValueError(f'InterIR: eta must be a number in (0, 20), got {eta!r}')
        for key, value in (('prior_gates', prior_gates), ('freq_branch', freq_branch), ('data_term', data_term),
                           ('second_order', second_order), ('recognise', recognise)):
            if not isinstance(value, bool):
                raise ValueError(f'InterIR: {key} must be true or false, got {value!r}')
        if head not in ('physical', 'residual'):
            raise ValueError(f"InterIR: head must be 'physical' or 'residual', got {head!r}")
        if recognise and head != 'physical':
            raise ValueError("InterIR: recognise=True needs head='physical' (the residual head has no maps to gate)")
        self.head_type = head
        self.size_multiple = unshuffle
        c, s = num_feat, unshuffle
        eb = dict(num_blocks=num_blocks, num_experts=num_experts, expand=expand, temperature=temperature,
                  freq_bound=freq_bound, priors=prior_gates, freq=freq_branch)
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
        outputs = []
        for t, step in enumerate((*self.stages, self.final)):
            if step is self.final:
                x, _, delta, eta = step(x, z, lam, p, q)  # final image step
            else:
                x, lam, p, q, delta, eta = step(x, z, lam, p, q)  # image, P, Q, lambda
            if self.head_type == 'physical':
                image, maps = self.head(skip, x, cues, presence)  # I_k = ((D - A) / t + A - R) / G, gated maps
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
