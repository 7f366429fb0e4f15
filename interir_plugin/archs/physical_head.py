"""InterIR's physical output head: it estimates the maps of the formation model ``D = (J G + R) t + A (1 - t)`` from
the network's features and the input, and inverts it; shared by InterIR and PlainResidualNet."""
import torch
import torch.nn.functional as F
from torch import nn

from interir_plugin.archs.econv import BatchGroupedConv2d
from interir_plugin.archs.image_ops import box_filter, max_filter
from interir_plugin.archs.recogniser import DegradationRecogniser
from interir_plugin.utils.presence import PRESENCE_PARTS


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
    - transmission ``t = exp(-tau)``, ``tau = conv_tau``: learned from the features (which see ``L_D`` and
      ``dc_D``), held at or above the dark-channel bound (``1 - dc_D / A`` per cell, ``1 - min_c D_c / A_c`` per
      pixel): any smaller ``t`` makes ``J G + R`` negative. Measured on MiniCDD's held-out split, without the bound
      the head over-dehazed lightly hazed grey photos (a quarter to half of their pixels below 0) and the labels with
      haze lost 1 to 3 dB. The dark-channel prior itself (``t = 1 - dc_D / A`` with a per-image strength, the
      estimate before) did not pay on renderers the network never saw: leave-one-renderer-out, 3 seeds, 15.95 +-
      0.02 dB with it, 16.03 +- 0.02 without (docs/interir.md, "Generalising");
    - airlight ``A`` (one value per channel, sigmoid), the strength ``k_b`` and an offset ``k_s`` of the streak
      weight's logit from one MLP on the pooled features and the four cue statistics;
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
      division). ``w_s, w_n, w'_n`` in (0, 1) are ``sigmoid(up(Conv3x3(x)) + F([D, TH_D, h_D]) + (0, k_s, 0))``
      (``h_D = D - box5(D)``): logits estimated from ``x`` (bilinearly upsampled) plus a full-resolution correction
      ``F`` (two 3x3 layers, 8 channels) that sees whether a bright thin structure is a streak, a flake or the
      photo's own texture. Working on ``D``'s own detail gives the head the full-resolution structure that ``x``
      (``s^2 C_in`` values per cell lifted to ``C``) cannot carry. (A cue of how near-vertical the bright thin
      structure runs, fitted to our own renderer's rain, was dropped: on renderers the network never saw it did not
      pay, 15.95 +- 0.02 dB with it, 15.95 +- 0.11 without; the white top-hat did, 15.82 +- 0.07 without it.)

    **Presence gates.** ``p`` (``B x 4`` in [0, 1], :data:`PRESENCE_PARTS`: low, haze, rain, snow) scales each map:
    ``g`` and ``R_noise`` by low light (the synthesiser's noise comes with it), ``tau`` by haze, ``R_streak`` by
    rain or snow (``1 - (1 - p_rain)(1 - p_snow)``). With nothing present the head returns ``D`` itself, whatever
    its weights. In training ``p`` is the label's (teacher forcing); otherwise the :class:`DegradationRecogniser`'s
    probabilities (soft gates: weak evidence moves the image little). Measured on MiniCDD's held-out split
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

    #: The cue statistics of :meth:`cues`: the means and standard deviations of ``log L_D`` and ``dc_D``.
    num_cue_stats = 4

    def __init__(self, ch, out_ch, scale, recognise=True):
        super().__init__()
        self.scale = scale
        # BatchGroupedConv2d: nn.Conv2d (same parameters) that stays fast with 2 CPU threads (econv.py)
        self.maps = nn.Sequential(BatchGroupedConv2d(ch + 2, ch, 3, 1, 1), nn.GELU(),
                                  BatchGroupedConv2d(ch, 2, 3, 1, 1))  # conv_g, conv_tau
        self.layer = nn.Sequential(BatchGroupedConv2d(ch, out_ch * scale * scale, 3, 1, 1), nn.PixelShuffle(scale))
        self.detail = BatchGroupedConv2d(ch, 3, 3, 1, 1)  # w_n, w_s, w'_n logits from x
        self.detail_full = nn.Sequential(BatchGroupedConv2d(3 * out_ch, 8, 3, 1, 1), nn.GELU(),
                                         BatchGroupedConv2d(8, 3, 3, 1, 1))  # their correction from D, TH_D, h_D
        # k, the offset of w_s's logit, A logits
        self.globals = nn.Sequential(nn.Linear(ch + self.num_cue_stats, ch), nn.GELU(), nn.Linear(ch, 2 + out_ch))
        self.recogniser = DegradationRecogniser() if recognise else None
        for layer in (self.maps[-1], self.layer[0], self.globals[-1], self.detail, self.detail_full[-1]):
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)
        nn.init.normal_(self.layer[0].weight, std=1e-3)
        nn.init.constant_(self.detail.bias, -3.0)
        nn.init.constant_(self.globals[-1].bias[2:], 1.4)  # A = sigmoid(1.4) = 0.8, the middle of the airlight range

    def cues(self, d):
        """What the head uses of ``d`` alone (float32), computed once for all stage outputs: ``log L_D`` and ``dc_D``
        (each ``B x 1 x h x w``: the log Retinex illumination and the dark channel), four statistics (``B x 4``: the
        means and standard deviations of both), and at full resolution the white top-hat ``TH_D`` and the correction
        ``F([D, TH_D, h_D])`` of the logits of ``w_n, w_s, w'_n`` (``B x 3 x H x W``)."""
        with torch.autocast(d.device.type, enabled=False):
            d, s = d.float(), self.scale
            light = box_filter(F.avg_pool2d(d.amax(1, keepdim=True), s), 3)
            log_light, dark = torch.log(light.clamp_min(1e-3)), -F.max_pool2d(-d.amin(1, keepdim=True), s)
            tophat = d + max_filter(max_filter(-d, 7), 7)  # D - opening_7(D) >= 0
            stats = torch.cat([log_light.mean((2, 3)), log_light.std((2, 3)), dark.mean((2, 3)), dark.std((2, 3))], 1)
            detail_full = self.detail_full(torch.cat([d, tophat, d - box_filter(d, 5)], 1))
        return log_light, dark, stats, tophat, detail_full

    def prepare(self, d, presence=None):
        """What every stage output shares: ``(cues, logits, gates)`` of ``d``: its :meth:`cues`, the recogniser's
        logits (``B x 4``; None without a recogniser) and the gates the head uses: ``presence`` when given (teacher
        forcing), else the recogniser's probabilities (:meth:`DegradationRecogniser.decide`), else None (every map
        on)."""
        cues = self.cues(d)
        logits = None if self.recogniser is None else self.recogniser(d, cues[2])
        if presence is None and logits is not None:
            presence = self.recogniser.decide(logits)
        return cues, logits, presence

    def forward(self, d, x, cues=None, presence=None, delta=None):
        """Restored image from the degraded input ``d`` and features ``x`` (``cues``: :meth:`cues` of ``d``, computed
        here if not given; ``presence``: ``B x 4`` gates in [0, 1], all on if None; ``delta``: the step's active set
        ``B x C x h x w``, which then decides where the streak layer is removed: it is multiplied by the channel
        mean of ``1 - delta``, upsampled); also returns the maps."""
        log_light, dark, cue_stats, tophat, detail_full = self.cues(d) if cues is None else cues
        with torch.autocast(x.device.type, enabled=False):
            x, d = x.float(), d.float()
            p = torch.ones(d.shape[0], len(PRESENCE_PARTS), device=d.device) if presence is None else presence.float()
            p_low = p[:, 0, None, None, None]
            p_streak = 1 - (1 - p[:, 2, None, None, None]) * (1 - p[:, 3, None, None, None])
            stats = torch.cat([x.mean((2, 3)), cue_stats], 1)
            k_gain, k_s, a_logits = self.globals(stats).split([1, 1, d.shape[1]], 1)
            airlight = torch.sigmoid(a_logits)[..., None, None]
            bound_t = -torch.log((1 - dark / airlight.mean(1, keepdim=True)).clamp_min(0.05))  # -log(1 - dc_D / A)
            prior = F.pad(k_gain[..., None, None] * -log_light, (0, 0, 0, 0, 0, 1))  # k_b (-log L_D); 0 for tau
            log_inv = 3 * torch.tanh((prior + self.maps(torch.cat([x, log_light, dark], 1))) / 3)
            # t >= 1 - dc_D / A: a smaller t makes J G + R negative at the cell's darkest pixel
            log_inv = torch.cat([log_inv[:, :1], torch.minimum(log_inv[:, 1:], bound_t)], 1)
            log_inv = log_inv * p[:, :2, None, None]  # g by low light, tau by haze
            log_inv, weights = (F.interpolate(m, scale_factor=self.scale, mode='bilinear', align_corners=False)
                                for m in (log_inv, self.detail(x)))
            # w_n, w_s, w'_n; the image's k_s shifts w_s's logit alone (padded to (0, k_s, 0) over the channels)
            weights = torch.sigmoid(weights + F.pad(k_s[..., None, None], (0, 0, 0, 0, 1, 1)) + detail_full)
            inv_gain, inv_t = torch.exp(log_inv).split(1, 1)  # 1 / G, 1 / t
            # the same bound at every pixel (the upsampled t can cross a neighbouring cell's): J G + R >= 0
            inv_t = torch.minimum(inv_t, 1 / (1 - (d / airlight).amin(1, keepdim=True)).clamp_min(0.05))
            streak = p_streak * (F.relu(self.layer(x)) + weights[:, 1:2] * tophat)  # on D
            if delta is not None:  # removed where the active set marks it: 1 - Delta, the prox's shrinkage
                streak = streak * F.interpolate((1 - delta.float()).mean(1, keepdim=True), scale_factor=self.scale,
                                                mode='bilinear', align_corners=False)
            rest = d - streak  # D' = D - R_streak: the noise bands of D without its streaks and flakes
            box5 = box_filter(rest, 5)
            high, band = rest - box5, box5 - box_filter(rest, 9)
            streak = streak * inv_t  # R_streak = R_D / t
            layer = streak + p_low * (weights[:, :1] * high + weights[:, 2:] * band) * inv_t
            image = ((d - airlight) * inv_t + airlight - layer) * inv_gain
        maps = {'gain': 1 / inv_gain, 'transmission': 1 / inv_t, 'airlight': airlight, 'layer': layer,
                'streak': streak, 'presence': p}
        return image, maps


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
