"""Tiled inference (interir_plugin/utils/tiling.py) of the real networks against whole-image inference.

What is documented (docs/training.md, "Tiled versus whole-image inference"), and checked here:

- a network without image-wide operators and a receptive-field radius <= overlap / 4 gives the whole-image
  output to float rounding (tests/test_model.py, the two-stage conv net);
- InterIR and DGUNet have image-wide operators, so a tile's output depends on the whole tile and tiles differ from
  the whole image *by design*: InterIR's P and Q are ``h x h`` / ``w x w`` matrices over the tile, its frequency
  branches transform the whole tile, and EConv routing and channel attention pool it; DGUNet's channel attention
  pools the tile, its half-instance norm normalises over it and its merge blocks project onto a subspace fitted
  over it. The documented difference: zero (bit-identical) when one tile covers the image; otherwise it falls as
  the overlap grows and as the tiles grow, and for these random networks the mean absolute difference stays
  below three quarters of what the network changes in its input (:data:`TOLERANCE`).
"""
import pytest
import torch

from conftest import photo_crop
from interir_plugin.archs.dgunet_arch import DGUNet
from interir_plugin.archs.interir_arch import InterIR
from interir_plugin.utils.tiling import tiled_apply

#: Mean |tiled - whole| over mean |whole - input| that tiles of 32 with overlap 16 stay below on a 128x128 photo.
#: Measured with these seeds: InterIR 0.54, DGUNet 0.12; over seeds 0-7 of the small random InterIR 0.30-0.65 (0.26
#: to 0.38 before the head's streak direction cue changed the shapes of two head layers, and so every later random
#: draw: with the earlier draw's weights, the streak cue's new weights at zero, the network gives the earlier
#: figures to three decimals).
TOLERANCE = 0.75


def _interir():
    torch.manual_seed(0)
    # every map of the head on (no recogniser): a random recogniser's decisions could switch the head off
    net = InterIR(num_feat=8, num_stages=1, num_experts=2, expand=1, recognise=False)
    with torch.no_grad():  # away from the initialisation, whose output head returns the input unchanged
        for p in net.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return net.eval()


def _dgunet():
    torch.manual_seed(0)
    return DGUNet(n_feat=8, scale_unetfeats=4, scale_orsnetfeats=4, depth=1).eval()


NETS = {'InterIR': _interir, 'DGUNet': _dgunet}


@pytest.fixture(scope='module')
def photo():
    return torch.from_numpy(photo_crop('coffee', (128, 128))).permute(2, 0, 1)[None].float() / 255


def _final(net):
    return lambda t: net(t)[-1]


@pytest.mark.parametrize('name', NETS)
def test_one_tile_is_whole_image_inference(name, photo):
    net = NETS[name]()
    with torch.no_grad():
        whole = net(photo)[-1]
        assert torch.equal(tiled_apply(_final(net), photo, 128, 32), whole)
        assert torch.equal(tiled_apply(_final(net), photo, 256, 32), whole)  # tiles are clipped to the image


@pytest.mark.parametrize('name', NETS)
def test_tiles_differ_by_design_and_less_with_more_context(name, photo):
    net = NETS[name]()
    with torch.no_grad():
        whole = net(photo)[-1]
        effect = (whole - photo).abs().mean()

        def diff(tile, overlap):
            return ((tiled_apply(_final(net), photo, tile, overlap) - whole).abs().mean() / effect).item()

        d = {(tile, overlap): diff(tile, overlap) for tile, overlap in ((32, 0), (32, 16), (96, 16))}
    assert effect > 0.01  # the network does change its input
    assert d[32, 0] > d[32, 16] > d[96, 16] > 1e-3, d  # by design, not rounding; more overlap, larger tiles: less
    assert d[32, 16] < TOLERANCE, d
