"""PlainResidualNet: InterIR's lifting and output head around a plain stack of residual conv blocks.

The control arm of the ablation (docs/ablation.md, ``benchmarks/bench_ablation.py``): no unfolding, no explainable
convolution, no P/Q algebra, only what any restoration network has, at the multiply-adds of InterIR-S. Whatever
InterIR-S gains over it at equal training time is what the unfolding buys.
"""
from basicsr.utils.registry import ARCH_REGISTRY
from torch import nn

from interir_plugin.archs.physical_head import PhysicalHead, PresenceGated


class _ResidualBlock(nn.Module):
    """``x + Conv3x3(GELU(Conv3x3(x)))`` (EDSR-style, without batch norm or scaling)."""

    def __init__(self, ch):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(ch, ch, 3, 1, 1), nn.GELU(), nn.Conv2d(ch, ch, 3, 1, 1))

    def forward(self, x):
        return x + self.body(x)


@ARCH_REGISTRY.register()
class PlainResidualNet(PresenceGated, nn.Module):
    """A plain stack of residual conv blocks between InterIR's lifting and InterIR's physical output head::

        lifting     z = Conv3x3(PixelUnshuffle_s(D))
        body        x = B_N(...B_1(z)),  B_n(x) = x + Conv3x3(GELU(Conv3x3(x)))
        head        I = ((D - A) / t + A - R) / G    (:class:`~interir_plugin.archs.physical_head.PhysicalHead`)

    The ablation baseline of InterIR (docs/ablation.md): ``num_blocks`` is chosen there so that its multiply-adds
    equal InterIR-S's. Each block costs ``2 * 9 * C^2`` multiply-adds per pixel at ``1/s`` resolution. As in
    InterIR the head starts as the identity (``I = D`` at initialisation).

    Args:
        num_in_ch (int): Channels of the degraded input D. Default: 3.
        num_out_ch (int): Channels of the output; when it differs from ``num_in_ch``, a 1x1 projection of D is the
            head's degraded image. Default: 3.
        num_feat (int): Feature channels C. Default: 16.
        unshuffle (int): Pixel-unshuffle factor s; H and W must be multiples of it (``size_multiple``). Default: 4.
        num_blocks (int): Residual blocks N (0: lifting and head only). Default: 8.

        recognise (bool): The head gates its maps by the presence of low light, haze, rain and snow, as InterIR's.
            Default: True.

    ``forward(x)`` returns a list with one image ``B x num_out_ch x H x W`` (the model class takes ``[-1]``);
    ``forward(x, presence=targets)`` gates the head by ``targets`` and returns ``([image], presence_logits)``, as
    :class:`~interir_plugin.archs.interir_arch.InterIR` does.
    """

    def __init__(self, num_in_ch=3, num_out_ch=3, num_feat=16, unshuffle=4, num_blocks=8, recognise=True):
        super().__init__()
        for key, value, low in (('num_in_ch', num_in_ch, 1), ('num_out_ch', num_out_ch, 1), ('num_feat', num_feat, 1),
                                ('unshuffle', unshuffle, 1), ('num_blocks', num_blocks, 0)):
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                raise ValueError(f'PlainResidualNet: {key} must be an int >= {low}, got {value!r}')
        if not isinstance(recognise, bool):
            raise ValueError(f'PlainResidualNet: recognise must be true or false, got {recognise!r}')
        self.size_multiple = unshuffle
        c, s = num_feat, unshuffle
        self.lift = nn.Sequential(nn.PixelUnshuffle(s), nn.Conv2d(num_in_ch * s * s, c, 3, 1, 1))
        self.body = nn.Sequential(*(_ResidualBlock(c) for _ in range(num_blocks)))
        self.skip = nn.Identity() if num_in_ch == num_out_ch else nn.Conv2d(num_in_ch, num_out_ch, 1)
        self.head = PhysicalHead(c, num_out_ch, s, recognise)

    def forward(self, x, presence=None):
        """Restore ``x`` (B x num_in_ch x H x W, H and W multiples of ``size_multiple``); returns ``[image]``."""
        if x.dim() != 4 or x.shape[-2] % self.size_multiple or x.shape[-1] % self.size_multiple:
            raise ValueError(f'PlainResidualNet: input size {tuple(x.shape)} must be B x C x H x W with H and W '
                             f'multiples of size_multiple={self.size_multiple} (the model class pads)')
        d = self.skip(x)
        cues, logits, gates = self.head.prepare(d, presence)
        image, _ = self.head(d, self.body(self.lift(x)), cues, gates)
        return [image] if presence is None else ([image], logits)
