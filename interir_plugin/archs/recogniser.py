"""The degradation recogniser of InterIR's physical head: which of low light, haze, rain and snow an image carries."""
import torch
import torch.nn.functional as F
from torch import nn

from interir_plugin.archs.image_ops import box_filter, max_filter
from interir_plugin.utils.presence import PRESENCE_PARTS


class DegradationRecogniser(nn.Module):
    """Which of low light, haze, rain and snow the input ``D`` carries: four logits from 22 image statistics.

    The statistics (float32, full resolution): the mean and standard deviation of the mean-, min- and max-channel
    maps, the mean saturation ``max - min``, the colour noise (mean ``|h - mean_c h|`` of the high-pass
    ``h = D - box3(D)``: sensor noise differs between channels, rain, snow and edges mostly do not); at two scales
    (5, 9) the luminance's mean high-pass magnitude, its share of bright thin structure (``sigmoid((h - 0.08) /
    0.02)``) and the same share relative to the image's contrast (``h / (std + 0.02)``: haze attenuates streaks);
    the relative share of its white top-hat (7 x 7); of a rough dark-channel dehaze ``J`` of ``D`` (airlight: the
    brightest 7 x 7 dark-channel value), the mean, the mean max-channel and the colour noise (a veil hides low
    light and scales noise by ``t``: with them low light under haze went from 0.92 to 1.00 recognised on the test
    split); plus the head's four cue statistics (:class:`PhysicalHead`). They are standardised
    (running statistics, as a batch norm without affine parameters) and fed to a two-layer MLP; the logits are
    scaled by 5. Trained by its own loss on the labels' parts (``UnfoldingRestorationModel``: ``presence_weight``,
    at ``presence_lr_scale`` times the network's learning rate), it is not trained through the gates. Outside
    training its probabilities are the head's gates (:meth:`decide`).
    """

    num_stats = 22

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

    @staticmethod
    def decide(logits):
        """The presence gates (``B x 4``, in (0, 1)) of ``logits``: each part's probability, not a thresholded
        decision. The head applies each map in proportion to it (in log space for gain and transmission), so weak
        evidence leaves the image nearly as it is; with a squared error on the log-map, applying the share ``p`` of a
        correction needed with probability ``p`` is what minimises the expected error. Measured on the
        leave-one-renderer-out held-out split (docs/interir.md, "Generalising"): a hard threshold (haze at logit 1,
        the others at 0) left more images worse than their input than these soft gates did."""
        return torch.sigmoid(logits.float())

    def forward(self, d, cue_stats):
        """Presence logits (``B x 4``) of ``d`` given the head's cue statistics (``B x 4``)."""
        stats = torch.cat([self.statistics(d), cue_stats.float()], 1)
        # a batch of one cannot be standardised by itself: it uses the running statistics
        stats = F.batch_norm(stats, self.norm.running_mean, self.norm.running_var, training=self.training and
                             stats.shape[0] > 1, momentum=self.norm.momentum, eps=self.norm.eps)
        if self.training and stats.shape[0] > 1:
            self.norm.num_batches_tracked.add_(1)
        return self.logit_scale * self.mlp(stats)
