"""Losses of multi-stage restoration nets: DGUNet's edge loss, an FFT loss and a per-image PSNR loss.

The pixel term is BasicSR's ``CharbonnierLoss`` or ``MSELoss``, or :class:`PSNRLoss` (``pixel_opt``); the per-stage
weighting lives in the model class (``UnfoldingRestorationModel``), so every loss here compares one prediction with
one target.
"""
import torch
from basicsr.losses.basic_loss import charbonnier_loss
from basicsr.losses.loss_util import reduce_loss
from basicsr.utils.registry import LOSS_REGISTRY
from torch import nn
from torch.nn import functional as F

_REDUCTIONS = ('none', 'mean', 'sum')


class _WeightedLoss(nn.Module):
    """What every loss here shares: ``loss_weight`` and a checked ``reduction``."""

    def __init__(self, loss_weight, reduction):
        super().__init__()
        if reduction not in _REDUCTIONS:
            raise ValueError(f'{type(self).__name__}: unsupported reduction {reduction!r}; choose one of {_REDUCTIONS}')
        self.loss_weight = loss_weight
        self.reduction = reduction


@LOSS_REGISTRY.register()
class EdgeLoss(_WeightedLoss):
    """Charbonnier loss on one Laplacian-pyramid level (the edge loss of DGUNet and MPRNet).

    The level is ``x - G(up(down(G(x))))``: ``G`` is the separable 5-tap binomial-like Gaussian
    ``[.05, .25, .4, .25, .05]`` with replicate padding, ``down`` keeps every second pixel and ``up`` puts those
    pixels back in place (others zero) scaled by 4, which keeps the mean brightness after the second blur.
    Works for any channel count (depthwise filtering) and any image size.

    Args:
        loss_weight (float): Weight of this loss. Default: 1.0 (DGUNet uses 0.05 for deblurring and deraining).
        reduction (str): 'none' | 'mean' | 'sum'. Default: 'mean'.
        eps (float): Charbonnier constant in DGUNet's convention, ``sqrt(d^2 + eps^2)`` (so ``eps=1e-3`` here
            equals BasicSR ``CharbonnierLoss(eps=1e-6)``, whose ``eps`` sits inside the square root unsquared).
            Default: 1e-3 (DGUNet).
    """

    def __init__(self, loss_weight=1.0, reduction='mean', eps=1e-3):
        super().__init__(loss_weight, reduction)
        self.eps = eps
        taps = torch.tensor([0.05, 0.25, 0.4, 0.25, 0.05])
        self.register_buffer('kernel', torch.outer(taps, taps)[None, None], persistent=False)

    def _blur(self, x):
        c = x.shape[1]
        pad = self.kernel.shape[-1] // 2
        x = F.pad(x, (pad, pad, pad, pad), mode='replicate')
        return F.conv2d(x, self.kernel.to(x.dtype).expand(c, 1, -1, -1), groups=c)

    def laplacian(self, x):
        """The Laplacian-pyramid level of ``x`` (``B x C x H x W``), same shape."""
        blurred = self._blur(x)
        upsampled = torch.zeros_like(blurred)
        upsampled[..., ::2, ::2] = blurred[..., ::2, ::2] * 4
        return x - self._blur(upsampled)

    def forward(self, pred, target, weight=None):
        """
        Args:
            pred (Tensor): ``B x C x H x W`` prediction.
            target (Tensor): ``B x C x H x W`` target.
            weight (Tensor, optional): Element-wise weights on the Laplacian difference. Default: None.
        """
        return self.loss_weight * charbonnier_loss(
            self.laplacian(pred), self.laplacian(target), weight, eps=self.eps**2, reduction=self.reduction)


@LOSS_REGISTRY.register()
class FrequencyLoss(_WeightedLoss):
    """L1 distance between the 2-D FFTs of prediction and target, on the real and imaginary parts.

    Computed in float32 (FFTs in bf16/fp16 are unsupported or inaccurate) over the full ``torch.fft.fft2``
    spectrum per channel.

    Args:
        loss_weight (float): Weight of this loss. Default: 1.0.
        reduction (str): 'none' (a ``B x C x H x W x 2`` tensor) | 'mean' | 'sum'. Default: 'mean'.
        norm (str): FFT normalisation, as ``torch.fft.fft2``: 'backward' (unnormalised, the usual choice of
            FFT losses in restoration code, so the loss grows with the patch area: 128x128 patches give about
            128 times the pixel L1 for white errors) | 'ortho' (size-independent, about the pixel L1) |
            'forward'. Default: 'backward'.
    """

    def __init__(self, loss_weight=1.0, reduction='mean', norm='backward'):
        super().__init__(loss_weight, reduction)
        if norm not in ('backward', 'ortho', 'forward'):
            raise ValueError(f"FrequencyLoss: unsupported norm {norm!r}; choose 'backward', 'ortho' or 'forward'")
        self.norm = norm

    def forward(self, pred, target):
        """
        Args:
            pred (Tensor): ``B x C x H x W`` prediction.
            target (Tensor): ``B x C x H x W`` target.
        """
        diff = torch.fft.fft2(pred.float() - target.float(), norm=self.norm)  # the FFT is linear
        return self.loss_weight * reduce_loss(torch.view_as_real(diff).abs(), self.reduction)


@LOSS_REGISTRY.register()
class PSNRLoss(_WeightedLoss):
    """Minus the PSNR of each image (on a peak of 1), averaged: ``10 log10(mean_{C,H,W} (pred - target)^2 + eps)``.

    Each image counts by its own log error, so an image the network must barely change (light rain, PSNR 25 dB)
    weighs as much as one it must change a lot (low light, 10 dB); with the mean squared error the second would
    set the gradient almost alone. Measured on MiniCDD's held-out split (docs/interir.md): InterIR-S's CPU recipe
    gains 0.3 to 0.5 dB and 0.02 SSIM over the mean squared error at equal time. Computed in float32.

    Args:
        loss_weight (float): Weight of this loss. Default: 1.0.
        reduction (str): 'none' (one value per image, ``B``) | 'mean' | 'sum'. Default: 'mean'.
        eps (float): Added to each image's mean squared error (a perfect image gives ``10 log10(eps)``, not
            minus infinity). Default: 1e-8.
    """

    def __init__(self, loss_weight=1.0, reduction='mean', eps=1e-8):
        super().__init__(loss_weight, reduction)
        if not eps > 0:
            raise ValueError(f'PSNRLoss: eps must be positive, got {eps!r}')
        self.eps = eps

    def forward(self, pred, target):
        """Minus the PSNR of ``pred`` against ``target`` (both ``B x C x H x W``), reduced over the batch."""
        mse = (pred.float() - target.float()).pow(2).flatten(1).mean(1)
        return self.loss_weight * reduce_loss(10 * torch.log10(mse + self.eps), self.reduction)
