"""The degradation recogniser's loss (InterIR's physical head): which of low light, haze, rain and snow are present."""
import torch.nn.functional as F
from basicsr.utils.registry import LOSS_REGISTRY
from torch import nn


@LOSS_REGISTRY.register()
class PresenceLoss(nn.Module):
    """Binary cross-entropy of presence logits against the parts of the batch's labels.

    ``forward(logits, targets, known)``: ``logits`` and ``targets`` are ``B x 4``
    (:func:`interir_plugin.utils.presence.presence_targets`), ``known`` (``B``) is 1 for images whose label is made of
    the four parts; the loss is averaged over those images, times ``loss_weight``, and 0 when there is none.

    Args:
        loss_weight (float): Weight of the loss. Default: 1.0.
    """

    def __init__(self, loss_weight=1.0):
        super().__init__()
        self.loss_weight = loss_weight

    def forward(self, logits, targets, known):
        bce = F.binary_cross_entropy_with_logits(logits.float(), targets, reduction='none').mean(1)
        return self.loss_weight * (bce * known).sum() / known.sum().clamp_min(1)
