"""Every renderer of every degradation component (parametrised over the registry, so a new one is tested on
registration): its maps explain the image exactly, a seed reproduces it bit for bit, bad parameters name
themselves, and it degrades a real photo by a sane amount; the spec forms that choose renderers; the original
specs unchanged."""
import hashlib

import cv2
import numpy as np
import pytest
import torch

from conftest import photo_crop
from interir_plugin.data import degradations as deg
from interir_plugin.data.renderers import COMPONENTS, DEFAULT_RENDERERS, RENDERERS

ALL = [(component, name) for component in COMPONENTS for name in RENDERERS[component]]
IDS = [f'{c}.{n}' for c, n in ALL]
#: sha256 of ``_default_outputs()`` made by the synthesiser before renderers existed (commit d6e31bb), for the
#: numpy/OpenCV versions it was computed with; other versions may draw other per-pixel noise, so they skip.
DEFAULT_HASH = {('2.4.6', '5.1.0'): 'c04bbf2925cf2ddadaf3cd202093d1e9b849499b658835e71ec3f9b70134c36a'}
#: the maps each component's renderers must fill (H x W float32 unless the renderer documents otherwise).
REQUIRED_MAPS = {'low_light': {'gain'}, 'haze': {'transmission', 'airlight'}, 'rain': {'rain'}, 'snow': {'snow'}}


def _photo(size=(48, 56), name='coffee', top=60, left=120):
    return photo_crop(name, size, top, left).astype(np.float32) / 255


def _rebuild(img, maps):
    """``(J G + R) t + A (1 - t)`` from the maps, broadcasting each map's documented shapes."""
    def full(value):
        value = np.asarray(value, np.float32)
        return value[..., None] if value.ndim == 2 else value

    gain = full(maps.get('gain', 1.0))
    t = full(maps.get('transmission', 1.0))
    return (img * gain + maps['layer']) * t + full(maps.get('airlight', 0.0)) * (1 - t)


def _psnr(a, b):
    return 10 * np.log10(1.0 / max(float(np.mean((np.clip(a, 0, 1) - b) ** 2)), 1e-12))


@pytest.mark.parametrize('component,name', ALL, ids=IDS)
def test_maps_explain_the_image_exactly(component, name):
    img = _photo()
    spec = {component: {'renderer': name}}
    plain, drawn = deg.synthesize(img, spec, seed=3, index=5)
    out, drawn_maps, maps = deg.synthesize(img, spec, seed=3, index=5, return_maps=True)
    assert np.array_equal(plain, out) and drawn == drawn_maps  # maps cost nothing and change nothing
    assert out.dtype == np.float32 and out.shape == img.shape and 0 <= out.min() and out.max() <= 1
    assert REQUIRED_MAPS[component] <= set(maps) and maps['layer'].shape == img.shape
    assert np.abs(_rebuild(img, maps) - out).max() < 1e-5
    for key in REQUIRED_MAPS[component] - {'airlight'}:
        m = np.asarray(maps[key])
        assert m.dtype == np.float32 and m.shape[:2] == img.shape[:2] and np.isfinite(m).all(), key
    if component in ('rain', 'snow'):  # the occupancy the audit's active set is scored on
        occupancy = maps[component]
        assert occupancy.shape == img.shape[:2] and occupancy.min() >= 0 and occupancy.max() > 0.2
    if component == 'haze':
        assert 0 < maps['transmission'].min() and maps['transmission'].max() <= 1
    # the function alone: the same image and draws with and without maps
    fn = RENDERERS[component][name]
    again, params = fn(img, 7)
    filled = {}
    again_m, params_m = fn(img, 7, maps=filled)
    assert np.array_equal(again, again_m) and params == params_m and filled
    assert all(isinstance(v, float) for v in params.values())


@pytest.mark.parametrize('component,name', ALL, ids=IDS)
def test_seed_reproduces_the_draw(component, name):
    img = _photo((40, 40))
    spec = {component: {'renderer': name}}
    a, pa = deg.synthesize(img, spec, seed=1, index=4)
    b, pb = deg.synthesize(img, spec, seed=1, index=4)
    c, pc = deg.synthesize(img, spec, seed=2, index=4)
    d, pd = deg.synthesize(img, spec, seed=1, index=5)
    assert np.array_equal(a, b) and pa == pb and pa[f'{component}.renderer'] == name
    assert not np.array_equal(a, c) and pa != pc and not np.array_equal(a, d) and pa != pd


@pytest.mark.parametrize('component,name', ALL, ids=IDS)
def test_bad_parameters_name_themselves(component, name):
    fn = RENDERERS[component][name]
    img = _photo((16, 16))
    assert fn.domains, f'{name} declares no parameter domains'
    for param, domain in fn.domains.items():
        bad = domain.low - 1 if domain.low is not None else domain.high + 1
        label = f'{fn.where}.{param}'
        with pytest.raises(ValueError, match=rf'{label} must be [<>]='):
            fn(img, 0, **{param: bad})
        with pytest.raises(ValueError, match=rf'{label} must be [<>]='):  # a spec fails before anything renders
            deg.parse_spec({component: {'renderer': name, param: bad}})
        low = domain.low if domain.low is not None else domain.high - 2
        with pytest.raises(ValueError, match=rf'{label}: range \[{low + 1}, {low}\] has low > high'):
            deg.parse_spec({component: {'renderer': name, param: [low + 1, low]}})
        with pytest.raises(ValueError, match=rf'{label} must be a number or a \[low, high\] pair'):
            fn(img, 0, **{param: 'x'})
    with pytest.raises(ValueError, match=rf"unknown parameter\(s\) \['nonsense'\] for degradation '{component}' "
                                         rf"renderer '{name}'; allowed: .*renderer"):
        deg.parse_spec({component: {'renderer': name, 'nonsense': 1}})


@pytest.mark.parametrize('component,name', ALL, ids=IDS)
def test_degrades_a_photo_by_a_sane_amount(component, name):
    img = cv2.resize(_photo((256, 256), 'chelsea', 0, 100), (128, 128), interpolation=cv2.INTER_AREA)
    scores = [_psnr(deg.synthesize(img, {component: {'renderer': name}}, seed, 0)[0], img) for seed in range(3)]
    assert 8 < np.mean(scores) < 32, scores
    for shape in ((16, 16), (12, 10, 4)):  # grey and four-channel images keep their shape
        other = np.random.default_rng(0).random(shape, dtype=np.float32)
        out, _ = RENDERERS[component][name](other, 1)
        assert out.shape == shape and out.dtype == np.float32 and np.isfinite(out).all()


@pytest.mark.parametrize('category', ['low_haze_rain', 'low_haze_snow'])
def test_composites_of_any_renderers_are_explained_exactly(category):
    img = _photo((32, 40))
    spec = {'category': category, 'renderers': {c: list(RENDERERS[c]) for c in COMPONENTS}}
    seen = set()
    for index in range(16):
        out, drawn, maps = deg.synthesize(img, spec, 5, index, return_maps=True)
        seen |= {(k, v) for k, v in drawn.items() if k.endswith('.renderer')}
        assert np.abs(_rebuild(img, maps) - out).max() < 1e-5, drawn
    assert len(seen) >= 10  # most renderers of the three components met each other


def test_registry_has_four_renderers_per_component_original_first():
    assert set(RENDERERS) == {'low_light', 'rain', 'snow', 'haze'}
    for component, names in RENDERERS.items():
        assert len(names) >= 4 and next(iter(names)) == DEFAULT_RENDERERS[component]
        assert names[DEFAULT_RENDERERS[component]] is deg.DEGRADATIONS[component]


@pytest.mark.parametrize('component', COMPONENTS)
def test_unknown_renderer_is_refused_with_the_allowed_list(component):
    allowed = ', '.join(RENDERERS[component])
    with pytest.raises(ValueError, match=rf"unknown renderer\(s\) \['nope'\] for degradation '{component}'; "
                                         rf'allowed: {allowed}$'):
        deg.parse_spec({component: {'renderer': 'nope'}})
    with pytest.raises(ValueError, match=r"unknown renderer\(s\) \['nope'\]"):
        deg.parse_spec({component: {'renderer': [DEFAULT_RENDERERS[component], 'nope']}})
    with pytest.raises(ValueError, match=rf'{component}.renderer must be a renderer name or a non-empty list'):
        deg.parse_spec({component: {'renderer': []}})


def test_renderer_spec_forms():
    img = _photo((32, 32))
    out, drawn = deg.synthesize(img, {'haze': {'renderer': 'fog', 'thickness': [1.0, 1.5]}}, 0, 0)
    assert drawn['haze.renderer'] == 'fog' and 1.0 <= drawn['haze.thickness'] <= 1.5
    # a list: one renderer drawn per sample, from the generator
    spec = {'rain': {'renderer': ['screen', 'drops']}}
    picks = [deg.synthesize(img, spec, 0, i)[1]['rain.renderer'] for i in range(12)]
    assert set(picks) == {'screen', 'drops'} and picks == [deg.synthesize(img, spec, 0, i)[1]['rain.renderer']
                                                           for i in range(12)]
    with pytest.raises(ValueError, match=r"rain: renderer is a list \['screen', 'drops'\], so the parameters "
                                         r"\['density'\] cannot be set"):
        deg.parse_spec({'rain': {'renderer': ['screen', 'drops'], 'density': 0.01}})
    with pytest.raises(ValueError, match="degradation 'noise' has no renderers; renderers exist for"):
        deg.parse_spec({'noise': {'renderer': 'gaussian'}})
    with pytest.raises(ValueError, match="the parameters of degradation 'haze' must be a mapping"):
        deg.parse_spec({'haze': 'fog'})


def test_category_with_renderers():
    img = _photo((32, 32))
    spec = {'category': 'low_haze_rain', 'renderers': {'low_light': ['retinex', 'camera'], 'haze': 'fog',
                                                        'snow': 'layers'}}  # snow: checked, not applied
    steps = deg.parse_spec(spec)
    assert steps == (('low_light', {'renderer': ('retinex', 'camera')}), ('rain', {}), ('haze', {'renderer': 'fog'}))
    explicit = {'low_light': {'renderer': ['retinex', 'camera']}, 'rain': {}, 'haze': {'renderer': 'fog'}}
    for index in range(3):
        a, pa = deg.synthesize(img, spec, 2, index)
        b, pb = deg.synthesize(img, explicit, 2, index)
        assert np.array_equal(a, b) and pa == pb and pa['haze.renderer'] == 'fog' and 'rain.renderer' not in pa
    with pytest.raises(ValueError, match=r"unknown renderer\(s\) \['flurry'\] for degradation 'snow'"):
        deg.parse_spec({'category': 'low', 'renderers': {'snow': 'flurry'}})
    with pytest.raises(ValueError, match="degradation 'fog' has no renderers"):
        deg.parse_spec({'category': 'haze', 'renderers': {'fog': 'fog'}})
    with pytest.raises(ValueError, match=r"unknown key\(s\) \['renderer'\] in a category synthesis spec"):
        deg.parse_spec({'category': 'haze', 'renderer': 'fog'})
    with pytest.raises(ValueError, match="unknown CDD-11 category 'fog'"):
        deg.parse_spec({'category': 'fog'})


def _default_outputs():
    img = _photo()
    digest = hashlib.sha256()
    for category in deg.CDD11_CATEGORIES:
        for index in range(2):
            out, drawn = deg.synthesize(img, category, seed=3, index=index)
            digest.update(out.tobytes())
            digest.update(repr(sorted(drawn.items())).encode())
    return digest.hexdigest()


def test_original_specs_are_unchanged():
    img = _photo((40, 40))
    # naming the original renderer draws exactly what no renderer draws (and only records the name)
    for component in COMPONENTS:
        a, pa = deg.synthesize(img, {component: {}}, 4, 2)
        b, pb = deg.synthesize(img, {component: {'renderer': DEFAULT_RENDERERS[component]}}, 4, 2)
        assert np.array_equal(a, b) and pb == {**pa, f'{component}.renderer': DEFAULT_RENDERERS[component]}
    # and the eleven categories draw what the synthesiser drew before renderers existed
    versions = (np.__version__, cv2.__version__)
    if versions not in DEFAULT_HASH:
        pytest.skip(f'reference hash made with numpy/OpenCV {list(DEFAULT_HASH)[0]}, these are {versions}')
    assert _default_outputs() == DEFAULT_HASH[versions]


def test_dataset_draws_renderers_per_sample(tmp_path):
    import json

    from interir_plugin.data.multi_degradation_dataset import MultiDegradationPairedDataset

    (tmp_path / 'clear').mkdir()
    cv2.imwrite(str(tmp_path / 'clear' / 'a.png'), photo_crop('rocket', (48, 48), 100, 200))
    source = {'label': 'low_haze', 'dataroot_gt': str(tmp_path / 'clear'), 'repeat': 32,
              'synthesis': {'category': 'low_haze', 'renderers': {'low_light': ['iso', 'spotlight'],
                                                                   'haze': ['glare', 'nonhomogeneous']}}}
    ds = MultiDegradationPairedDataset({'phase': 'train', 'gt_size': 32, 'sources': [source]})
    torch.manual_seed(0)  # training draws anew at every access, from torch's generator
    params = [json.loads(ds[i]['degradation_params']) for i in range(32)]
    assert {p['low_light.renderer'] for p in params} == {'iso', 'spotlight'}
    assert {p['haze.renderer'] for p in params} == {'glare', 'nonhomogeneous'}
    with pytest.raises(ValueError, match=r"unknown renderer\(s\) \['smog'\]"):
        MultiDegradationPairedDataset({'phase': 'val', 'sources': [
            {**source, 'repeat': 1, 'synthesis': {'haze': {'renderer': 'smog'}}}]})
