"""The synthesiser's physical maps (``maps=`` / ``return_maps=True``): free when not asked, exact when asked."""
import numpy as np
import pytest

from conftest import photo_crop
from interir_plugin.data import degradations as deg


def _photo(size=(48, 56)):
    return photo_crop('coffee', size, 60, 120).astype(np.float32) / 255


@pytest.mark.parametrize('category', deg.CDD11_CATEGORIES)
def test_maps_do_not_change_the_composite_and_explain_it_exactly(category):
    img = _photo()
    plain, drawn = deg.synthesize(img, category, seed=3, index=5)
    out, drawn_maps, maps = deg.synthesize(img, category, seed=3, index=5, return_maps=True)
    assert np.array_equal(plain, out) and drawn == drawn_maps  # bit-identical with and without maps
    parts = {deg.CATEGORY_PARTS[p] for p in category.split('_')}
    expected = {'layer'}
    expected |= {'gain', 'illumination', 'noise_sigma'} if 'low_light' in parts else set()
    expected |= {'rain'} if 'rain' in parts else set()
    expected |= {'snow'} if 'snow' in parts else set()
    expected |= {'transmission', 'airlight'} if 'haze' in parts else set()
    assert set(maps) == expected
    for key in expected - {'airlight', 'noise_sigma', 'layer'}:
        assert maps[key].shape == img.shape[:2] and maps[key].dtype == np.float32, key
    # D = (J G + R) t + A (1 - t) with the maps it returned
    gain = maps.get('gain', np.ones(img.shape[:2], np.float32))[..., None]
    t = maps.get('transmission', np.ones(img.shape[:2], np.float32))[..., None]
    rebuilt = (img * gain + maps['layer']) * t + maps.get('airlight', 0.0) * (1 - t)
    assert np.abs(rebuilt - out).max() < 1e-5
    if 'haze' in parts:
        assert maps['airlight'] == drawn['haze.airlight'] and 0 < maps['transmission'].min() <= 1
    if 'low_light' in parts:
        assert maps['noise_sigma'] == drawn['low_light.noise_sigma']
        assert np.allclose(maps['gain'], np.maximum(maps['illumination'], 1e-3) ** (drawn['low_light.gamma'] - 1),
                           rtol=1e-4)


@pytest.mark.parametrize('name', deg.ORDER)
def test_each_function_same_output_with_maps(name):
    img = _photo((40, 40))
    out, params = deg.DEGRADATIONS[name](img, 7)
    maps = {}
    out_m, params_m = deg.DEGRADATIONS[name](img, 7, maps=maps)
    assert np.array_equal(out, out_m) and params == params_m and maps


def test_single_degradation_maps_are_the_physics():
    img = _photo()
    maps = {}
    dark, p = deg.low_light(img, 0, noise_sigma=0.0, maps=maps)
    assert np.allclose(dark, np.clip(img * maps['gain'][..., None], 0, 1), atol=1e-6) and maps['noise_sigma'] == 0
    assert 0 < maps['gain'].min() and maps['gain'].max() <= 1 and maps['illumination'].max() <= 1
    maps = {}
    black = np.zeros_like(img)
    wet, p = deg.rain(black, 1, maps=maps)
    assert np.allclose(wet, np.clip(maps['rain'], 0, 1)[..., None].repeat(3, 2), atol=1e-6)
    assert maps['rain'].max() <= p['intensity'] + 1e-6 and (maps['rain'] > 0).mean() > 0.01
    maps = {}
    snowy, _ = deg.snow(img, 2, maps=maps)
    m = maps['snow'][..., None]
    assert np.allclose(snowy, img * (1 - m) + m, atol=1e-6) and 0 <= m.min() and m.max() <= 1 and m.max() > 0.5
    maps = {}
    hazy, p = deg.haze(img, 3, beta=1.5, maps=maps)
    t = maps['transmission'][..., None]
    assert maps['airlight'] == p['airlight'] and np.allclose(hazy, img * t + p['airlight'] * (1 - t), atol=1e-6)
    maps = {}
    deg.noise(img, 4, sigma=(10, 30), maps=maps)
    assert 10 / 255 <= maps['noise_sigma'] <= 30 / 255


def test_noise_sigmas_combine_and_maps_are_seeded():
    img = _photo((32, 32))
    spec = {'low_light': {'noise_sigma': 0.03}, 'noise': {'sigma': 10.2}}
    _, _, maps = deg.synthesize(img, spec, 0, 0, return_maps=True)
    assert maps['noise_sigma'] == pytest.approx(np.hypot(0.03, 0.04))
    _, _, again = deg.synthesize(img, 'low_haze_rain', 4, 9, return_maps=True)
    _, _, same = deg.synthesize(img, 'low_haze_rain', 4, 9, return_maps=True)
    _, _, other = deg.synthesize(img, 'low_haze_rain', 4, 10, return_maps=True)
    assert all(np.array_equal(again[k], same[k]) for k in again)
    assert not np.array_equal(again['rain'], other['rain'])


def test_maps_argument_errors():
    img = _photo((16, 16))
    with pytest.raises(TypeError, match=r'rain: maps must be None or a dict.*list'):
        deg.rain(img, 0, maps=[])
    with pytest.raises(ValueError, match=r"unknown parameter\(s\) \['maps'\] for degradation 'haze'"):
        deg.parse_spec({'haze': {'maps': {}}})
