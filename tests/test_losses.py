"""EdgeLoss and FrequencyLoss against independent NumPy computations of their definitions, on real photos."""
import numpy as np
import pytest
import torch

import interir_plugin  # noqa: F401  (registers the losses)
from conftest import photo_crop
from interir_plugin.losses.multistage_loss import EdgeLoss, FrequencyLoss, PSNRLoss

TAPS = np.array([0.05, 0.25, 0.4, 0.25, 0.05])


def _photo(name='astronaut', size=(24, 30), top=100, left=150):
    return torch.from_numpy(photo_crop(name, size, top, left)).permute(2, 0, 1)[None].double() / 255


def _np_blur(img):
    """Separable 5-tap blur of one H x W channel with edge replication, by explicit sums."""
    h, w = img.shape
    padded = np.pad(img, 2, mode='edge')
    rows = sum(TAPS[k] * padded[k:k + h, :] for k in range(5))
    return sum(TAPS[k] * rows[:, k:k + w] for k in range(5))


def _np_laplacian(img):
    blurred = _np_blur(img)
    zeros = np.zeros_like(blurred)
    zeros[::2, ::2] = 4 * blurred[::2, ::2]
    return img - _np_blur(zeros)


@pytest.mark.parametrize('size', [(24, 30), (17, 23)])
def test_edge_loss_matches_numpy_definition(size):
    pred, target = _photo(size=size), _photo('coffee', size=size, top=50, left=60)
    loss = EdgeLoss(loss_weight=0.05, eps=1e-3).double()
    lap = np.stack([_np_laplacian(pred[0, c].numpy()) - _np_laplacian(target[0, c].numpy()) for c in range(3)])
    expect = 0.05 * np.mean(np.sqrt(lap**2 + 1e-6))
    assert loss(pred, target).item() == pytest.approx(expect, rel=1e-6)  # float32 taps
    assert torch.allclose(loss.laplacian(pred)[0, 1], torch.from_numpy(_np_laplacian(pred[0, 1].numpy())), atol=1e-6)


def test_edge_loss_properties():
    x = _photo().float()
    loss = EdgeLoss()
    assert loss(x, x).item() == pytest.approx(1e-3, rel=1e-4)  # Charbonnier floor sqrt(eps^2)
    flat = torch.full((1, 3, 16, 16), 0.3)
    assert loss.laplacian(flat)[..., 4:-4, 4:-4].abs().max() < 1e-6  # no edges inside a flat image
    assert loss.laplacian(x).abs().mean() > 1e-3  # a photo has edges
    for c in (1, 4):  # any channel count
        y = torch.rand(2, c, 12, 12)
        assert EdgeLoss(reduction='none')(y, y * 0.5).shape == (2, c, 12, 12)
    y = torch.rand(2, 3, 12, 12)
    assert EdgeLoss(reduction='sum')(y, 0 * y).item() == pytest.approx(
        EdgeLoss(reduction='mean')(y, 0 * y).item() * y.numel(), rel=1e-5)
    weight = torch.zeros(2, 1, 12, 12)
    weight[:, :, :6] = 1
    assert EdgeLoss()(y, 0 * y, weight).item() == pytest.approx(
        EdgeLoss(reduction='none')(y, 0 * y)[:, :, :6].mean().item(), rel=1e-5)
    pred = x.clone().requires_grad_(True)
    loss(pred, _photo('chelsea').float()).backward()
    assert torch.isfinite(pred.grad).all() and pred.grad.abs().sum() > 0


@pytest.mark.parametrize('norm,scale', [('backward', 1.0), ('ortho', None), ('forward', None)])
def test_frequency_loss_matches_numpy_fft(norm, scale):
    pred, target = _photo(), _photo('chelsea', top=80, left=90)
    spec = np.fft.fft2(pred[0].numpy() - target[0].numpy(), norm=norm)
    expect = 0.01 * np.mean(np.concatenate([np.abs(spec.real).ravel(), np.abs(spec.imag).ravel()]))
    got = FrequencyLoss(loss_weight=0.01, norm=norm)(pred, target).item()
    assert got == pytest.approx(expect, rel=1e-5)


def test_frequency_loss_properties():
    x, y = _photo().float(), _photo('chelsea').float()
    assert FrequencyLoss()(x, x).item() == 0
    assert FrequencyLoss(reduction='none')(x, y).shape == (1, 3, 24, 30, 2)
    # 'backward' grows with the area, 'ortho' does not (Parseval): a 2x larger crop of white noise
    small, large = torch.randn(1, 3, 32, 32), torch.randn(1, 3, 64, 64)
    zeros = torch.zeros_like
    ratio_backward = FrequencyLoss()(large, zeros(large)) / FrequencyLoss()(small, zeros(small))
    ratio_ortho = FrequencyLoss(norm='ortho')(large, zeros(large)) / FrequencyLoss(norm='ortho')(small, zeros(small))
    assert ratio_backward.item() == pytest.approx(2.0, rel=0.1)
    assert ratio_ortho.item() == pytest.approx(1.0, rel=0.1)
    pred = x.clone().requires_grad_(True)
    FrequencyLoss()(pred.bfloat16(), y).backward()  # bf16 inputs are computed in float32
    assert torch.isfinite(pred.grad).all() and pred.grad.abs().sum() > 0


def test_psnr_loss_is_minus_the_mean_psnr_per_image():
    """Against NumPy: minus the mean over images of each image's PSNR (peak 1); the lighter-damaged image counts as
    much as the heavier one, and the gradient flows."""
    y = torch.cat([_photo().float(), _photo('coffee').float()])
    noise = torch.randn(y.shape, generator=torch.Generator().manual_seed(0))
    pred = (y + noise * torch.tensor([0.01, 0.2]).view(2, 1, 1, 1)).requires_grad_()
    mse = ((pred.detach().double().numpy() - y.double().numpy()) ** 2).reshape(2, -1).mean(1)
    psnr = -10 * np.log10(mse + 1e-8)  # with the loss's eps
    assert PSNRLoss()(pred, y).item() == pytest.approx(-psnr.mean(), rel=1e-5)
    per_image = PSNRLoss(reduction='none', loss_weight=2.0)(pred, y)
    np.testing.assert_allclose(per_image.detach().numpy(), -2 * psnr, rtol=1e-5)
    assert PSNRLoss()(y, y).item() == pytest.approx(-80.0)  # 10 log10(eps): finite for a perfect image
    PSNRLoss()(pred, y).backward()
    assert torch.isfinite(pred.grad).all() and pred.grad.abs().sum() > 0


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match='reduction'):
        EdgeLoss(reduction='avg')
    with pytest.raises(ValueError, match='reduction'):
        FrequencyLoss(reduction='avg')
    with pytest.raises(ValueError, match='norm'):
        FrequencyLoss(norm='unitary')
    with pytest.raises(ValueError, match='eps'):
        PSNRLoss(eps=0)
    with pytest.raises(ValueError, match='reduction'):
        PSNRLoss(reduction='avg')


def test_registered_and_built_by_basicsr():
    from basicsr.losses import build_loss

    edge = build_loss({'type': 'EdgeLoss', 'loss_weight': 0.05})
    freq = build_loss({'type': 'FrequencyLoss', 'loss_weight': 0.01, 'norm': 'ortho'})
    assert isinstance(edge, EdgeLoss) and edge.loss_weight == 0.05
    assert isinstance(freq, FrequencyLoss) and freq.norm == 'ortho'
    assert type(edge).__module__ == 'interir_plugin.losses.multistage_loss'
    # DGUNet's Charbonnier with eps 1e-3 is BasicSR's CharbonnierLoss with eps 1e-6 (eps inside the root)
    char = build_loss({'type': 'CharbonnierLoss', 'eps': 1e-6})
    x, y = _photo().float(), _photo('coffee').float()
    assert char(x, y).item() == pytest.approx(torch.sqrt((x - y) ** 2 + 1e-3**2).mean().item(), rel=1e-6)
