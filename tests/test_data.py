"""MultiDegradationPairedDataset, the physics synthesiser and their error messages, on real photos."""
import json
import os
import os.path as osp

import cv2
import numpy as np
import pytest
import torch

import interir_plugin  # noqa: F401  (shims and registration before anything imports basicsr)
from conftest import photo_crop
from interir_plugin.data import degradations as deg
from interir_plugin.data.multi_degradation_dataset import MultiDegradationPairedDataset
from interir_plugin.data.preparation import make_lmdbs, write_cdd11_split
from interir_plugin.data.sources import IndexTable, decode_image

PHOTOS = (('astronaut', 0, 100), ('coffee', 60, 200), ('rocket', 100, 250))


def _photos(size=(48, 64)):
    return [(f'{name}_{i}', photo_crop(name, size, top, left)[..., ::-1].astype(np.float32) / 255)
            for i, (name, top, left) in enumerate(PHOTOS)]


@pytest.fixture(scope='module')
def cdd(tmp_path_factory):
    """A CDD-11 layout (3 real photo crops x 11 categories) and its LMDB twin."""
    root = tmp_path_factory.mktemp('cdd')
    write_cdd11_split(_photos(), str(root / 'disk' / 'train'), seed=3)
    make_lmdbs(str(root / 'disk'), str(root / 'lmdb'))
    return root


def _ds(**opt):
    opt.setdefault('phase', 'val')
    return MultiDegradationPairedDataset(opt)


def test_registered_and_built_by_basicsr(cdd):
    from basicsr.data import build_dataset
    from basicsr.utils.registry import DATASET_REGISTRY

    assert DATASET_REGISTRY.get('MultiDegradationPairedDataset') is MultiDegradationPairedDataset
    ds = build_dataset({'name': 'cdd', 'type': 'MultiDegradationPairedDataset', 'phase': 'train', 'scale': 1,
                        'cdd11': {'root': str(cdd / 'disk' / 'train')}, 'gt_size': 32, 'batch_size_per_gpu': 2,
                        'num_worker_per_gpu': 0, 'use_shuffle': True, 'dataset_enlarge_ratio': 1})
    assert len(ds) == 33


def test_cdd11_yields_all_labels(cdd):
    ds = _ds(cdd11={'root': str(cdd / 'disk' / 'train')})
    assert ds.label_names == deg.CDD11_CATEGORIES and len(ds) == 33
    seen = {}
    for i in range(len(ds)):
        s = ds[i]
        assert s['lq'].shape == s['gt'].shape == (3, 48, 64) and s['lq'].dtype == torch.float32
        assert 0 <= float(s['lq'].min()) and float(s['lq'].max()) <= 1
        assert ds.label_names[s['label']] == s['label_name']
        assert osp.basename(osp.dirname(s['lq_path'])) == s['label_name']
        assert osp.basename(s['lq_path']) == osp.basename(s['gt_path'])
        assert not torch.equal(s['lq'], s['gt'])
        seen[s['label_name']] = seen.get(s['label_name'], 0) + 1
    assert seen == dict.fromkeys(deg.CDD11_CATEGORIES, 3)
    # GT is the stored clean image, RGB
    clean = cv2.imread(ds[0]['gt_path'])[..., ::-1].transpose(2, 0, 1) / 255.0
    assert np.allclose(ds[0]['gt'].numpy(), clean, atol=1e-6)


def test_category_subset_keeps_canonical_indices(cdd):
    ds = _ds(cdd11={'root': str(cdd / 'disk' / 'train'), 'categories': ['haze', 'low_haze_rain']})
    assert {(ds[i]['label'], ds[i]['label_name']) for i in range(len(ds))} == {(1, 'haze'), (9, 'low_haze_rain')}


def test_train_crop_and_collate(cdd):
    ds = _ds(phase='train', cdd11={'root': str(cdd / 'disk' / 'train')}, gt_size=32, sampling='balanced')
    loader = torch.utils.data.DataLoader(ds, batch_size=4, shuffle=True)
    batch = next(iter(loader))
    assert batch['lq'].shape == batch['gt'].shape == (4, 3, 32, 32)
    assert batch['label'].dtype == torch.int64 and len(batch['label_name']) == 4


def test_disk_and_lmdb_identical(cdd):
    disk = _ds(cdd11={'root': str(cdd / 'disk' / 'train')})
    lmdb = _ds(cdd11={'root': str(cdd / 'lmdb' / 'train')}, io_backend={'type': 'lmdb'})
    assert len(disk) == len(lmdb) == 33
    for i in range(len(disk)):
        a, b = disk[i], lmdb[i]
        assert torch.equal(a['lq'], b['lq']) and torch.equal(a['gt'], b['gt'])
        assert a['label'] == b['label']
        assert osp.splitext(osp.basename(a['lq_path']))[0] == osp.basename(b['lq_path'])


def test_synthesis_deterministic_per_seed_and_index():
    img = photo_crop('chelsea', (64, 64), 50, 150).astype(np.float32) / 255
    for cat in ('low_haze_rain', 'low_haze_snow'):
        a, pa = deg.synthesize(img, cat, seed=1, index=7)
        b, pb = deg.synthesize(img, cat, seed=1, index=7)
        c, pc = deg.synthesize(img, cat, seed=2, index=7)
        d, _ = deg.synthesize(img, cat, seed=1, index=8)
        assert np.array_equal(a, b) and pa == pb
        assert not np.allclose(a, c) and pa != pc and not np.allclose(a, d)
        assert a.dtype == np.float32 and a.shape == img.shape and 0 <= a.min() and a.max() <= 1
        assert {k.split('.')[0] for k in pa} == {deg.CATEGORY_PARTS[p] for p in cat.split('_')}


@pytest.mark.parametrize('name', deg.ORDER)
def test_each_degradation_alone(name):
    img = photo_crop('coffee', (48, 48), 100, 200).astype(np.float32) / 255
    fn = deg.DEGRADATIONS[name]
    out, params = fn(img, np.random.default_rng(0))
    out2, params2 = fn(img, np.random.default_rng(0))
    assert np.array_equal(out, out2) and params == params2 and params
    assert out.shape == img.shape and out.dtype == np.float32
    assert np.abs(out - img).mean() > 1e-3  # it did degrade
    assert all(isinstance(v, float) for v in params.values())


def test_physics_of_single_degradations():
    img = photo_crop('astronaut', (64, 64), 0, 200).astype(np.float32) / 255
    dark, p = deg.low_light(img, 0, noise_sigma=0.0)
    assert dark.mean() < img.mean() * 0.8 and np.all(dark <= img + 1e-6) and 2 <= p['gamma'] <= 3
    hazy, p = deg.haze(img, 0, beta=1.5, airlight=0.9, depth=np.zeros((64, 64), np.float32))
    assert np.allclose(hazy, img, atol=1e-6) and p == {'beta': 1.5, 'airlight': 0.9}  # depth 0: t = 1
    depth = np.tile(np.linspace(0, 1, 64, dtype=np.float32)[:, None], (1, 64))
    hazy, _ = deg.haze(img, 0, beta=2.0, airlight=0.9, depth=depth)
    expect = img[-1] * np.exp(-2.0) + 0.9 * (1 - np.exp(-2.0))
    assert np.allclose(hazy[-1], expect, atol=1e-5)
    noisy, p = deg.noise(img, 0, sigma=25, quantize=True)
    assert p == {'sigma': 25.0} and abs((noisy - img).std() * 255 - 25) < 3
    assert np.allclose(noisy * 255, np.round(noisy * 255), atol=1e-3)


def test_dataset_synthesis_is_worker_invariant(cdd):
    opt = {'sources': [{'label': 'lhr', 'dataroot_gt': str(cdd / 'disk' / 'train' / 'clear'),
                        'synthesis': 'low_haze_rain'}], 'seed': 5}
    ds = _ds(**opt)
    direct = [ds[i] for i in range(len(ds))]
    loader = torch.utils.data.DataLoader(_ds(**opt), batch_size=None, num_workers=2)
    for a, b in zip(direct, loader):
        assert torch.equal(a['lq'], b['lq']) and a['degradation_params'] == b['degradation_params']
    params = json.loads(direct[0]['degradation_params'])
    assert set(params) >= {'low_light.gamma', 'rain.angle', 'haze.beta'}
    other = _ds(**{**opt, 'seed': 6})[0]
    assert not torch.equal(other['lq'], direct[0]['lq'])


def test_synthesis_source_training_and_collate_with_pairs(cdd):
    clear = str(cdd / 'disk' / 'train' / 'clear')
    ds = _ds(phase='train', gt_size=32, sources=[
        {'label': 'denoise_25', 'dataroot_gt': clear, 'synthesis': {'noise': {'sigma': 25}}, 'repeat': 2},
        {'label': 'low', 'dataroot_gt': clear, 'dataroot_lq': str(cdd / 'disk' / 'train' / 'low')}])
    assert len(ds) == 9 and ds.label_names == ('denoise_25', 'low')
    batch = torch.utils.data.default_collate([ds[i] for i in range(len(ds))])
    assert batch['lq'].shape == (9, 3, 32, 32)
    assert batch['label'].tolist() == [0] * 6 + [1] * 3
    assert all(json.loads(p)['noise.sigma'] == 25.0 for p in batch['degradation_params'][:6])
    assert batch['degradation_params'][6:] == ['{}'] * 3


def test_grey_prob_makes_clean_training_patches_grey_before_degrading(cdd):
    clear = str(cdd / 'disk' / 'train' / 'clear')
    source = {'label': 'haze', 'dataroot_gt': clear, 'synthesis': 'haze', 'repeat': 4}

    def channel_spread(grey_prob):
        ds = _ds(phase='train', gt_size=32, sources=[source], grey_prob=grey_prob)
        return [float((s['gt'] - s['gt'].mean(0)).abs().max()) for s in (ds[i] for i in range(len(ds)))]

    assert all(v < 1e-6 for v in channel_spread(1.0))  # every target grey (the input degraded from it)
    assert all(v > 1e-2 for v in channel_spread(0))  # the colour photo as it is
    with pytest.raises(ValueError, match='grey_prob'):
        _ds(phase='train', gt_size=32, sources=[source], grey_prob=1.5)
    with pytest.raises(ValueError, match='grey_prob applies to training only'):
        _ds(phase='val', sources=[{**source, 'repeat': 1}], grey_prob=0.5)


def test_severity_scales_the_degradation_between_clean_and_rendered(cdd):
    """``D' = J + s (D - J)``: with s fixed at 0.5 the input lies halfway between the target and the full
    rendering of the same draw (same crop, same synthesis key), and s is recorded."""
    import random

    clear = str(cdd / 'disk' / 'train' / 'clear')
    opt = dict(phase='train', gt_size=32, fresh_synthesis=False,
               sources=[{'label': 'haze', 'dataroot_gt': clear, 'synthesis': 'low_haze_rain', 'repeat': 2}])
    full, half = _ds(**opt), _ds(**opt, severity=[0.5, 0.5])
    for i in range(len(full)):
        random.seed(i)
        a = full[i]
        random.seed(i)
        b = half[i]
        torch.testing.assert_close(b['gt'], a['gt'], rtol=0, atol=0)
        torch.testing.assert_close(b['lq'], a['gt'] + 0.5 * (a['lq'] - a['gt']), rtol=0, atol=1e-6)
        assert json.loads(b['degradation_params'])['severity'] == 0.5
    for bad in ([0, 1], [0.8, 0.5], [0.5, 1.5], 0.5):
        with pytest.raises(ValueError, match='severity'):
            _ds(**opt, severity=bad)
    with pytest.raises(ValueError, match='severity applies to training only'):
        _ds(phase='val', sources=[{**opt['sources'][0], 'repeat': 1}], severity=[0.5, 1])


def test_index_table_balanced_and_proportional():
    # two labels: A = sources of 10 and 5 items (repeat 2 on the second), B = 4 items
    prop = IndexTable([10, 5, 4], [1, 2, 1], [[0, 1, 2]])
    assert len(prop) == 24
    labels = ['A' if prop.locate(i)[0] < 2 else 'B' for i in range(len(prop))]
    assert labels.count('A') == 20 and labels.count('B') == 4
    bal = IndexTable([10, 5, 4], [1, 2, 1], [[0, 1], [2]])
    assert len(bal) == 40
    located = [bal.locate(i) for i in range(len(bal))]
    assert sum(s < 2 for s, _ in located) == 20
    assert sorted({it for s, it in located if s == 2}) == [0, 1, 2, 3]  # B cycled: every item appears
    assert all(0 <= it < [10, 5, 4][s] for s, it in located)
    with pytest.raises(IndexError, match='out of range'):
        bal.locate(40)


def test_balanced_sampling_option(cdd):
    clear = str(cdd / 'disk' / 'train' / 'clear')
    sources = [{'label': 'big', 'dataroot_gt': clear, 'synthesis': 'rain', 'repeat': 4},
               {'label': 'small', 'dataroot_gt': clear, 'synthesis': 'snow'}]
    prop = _ds(phase='train', gt_size=16, sources=sources)
    bal = _ds(phase='train', gt_size=16, sources=sources, sampling='balanced')
    assert len(prop) == 15 and len(bal) == 24
    count = [sum(bal.table.locate(i)[0] == k for i in range(len(bal))) for k in (0, 1)]
    assert count == [12, 12]


def test_protocol_files():
    from interir_plugin.data.sources import load_protocol

    for name, n_labels in (('cdd11', 11), ('minicdd', 11), ('three_task', 5), ('five_task', 5)):
        for split in ('train', 'test'):
            labels, sources, cdd11 = load_protocol(name, '/data', split)
            assert len(labels) == n_labels
            got = {s['label'] for s in sources} | (set(labels) if cdd11 else set())
            assert got == set(labels), (name, split)
            assert all(s['dataroot_gt'].startswith('/data/') for s in sources)
    _, sources, _ = load_protocol('five_task', '/data', 'train')
    assert {s['label']: s.get('repeat', 1) for s in sources} == {
        'denoise_25': 3, 'derain': 120, 'dehaze': 1, 'deblur': 5, 'lowlight': 20}


def test_three_task_protocol_on_a_tiny_tree(tmp_path):
    """The 3-task protocol file drives the dataset (noise labels synthesised, rain/haze paired by lq_to_gt)."""
    imgs = _photos((32, 32))
    tree = {'train/denoise/BSD400': ['a.png', 'b.png'], 'train/denoise/WED': ['c.bmp'],
            'train/derain/Rain100L/gt': ['norain-1.png'], 'train/derain/Rain100L/rainy': ['rain-1.png'],
            'train/dehaze/OTS/clear': ['0001.jpg'], 'train/dehaze/OTS/hazy': ['0001_0.8_0.2.jpg', '0001_1_0.1.jpg']}
    for folder, names in tree.items():
        os.makedirs(tmp_path / folder)
        for k, name in enumerate(names):
            cv2.imwrite(str(tmp_path / folder / name), (imgs[k % 3][1] * 255).astype(np.uint8))
    ds = _ds(phase='train', gt_size=16, protocol='three_task', protocol_root=str(tmp_path))
    assert ds.label_names == ('denoise_15', 'denoise_25', 'denoise_50', 'derain', 'dehaze')
    # 3 noise labels x 3 clean images x repeat 3 + 1 rain pair x 120 + 2 hazy images
    assert len(ds) == 27 + 120 + 2
    names = {ds[i]['label_name'] for i in (0, 9, 18, 27, 147, 148)}
    assert names == set(ds.label_names)
    assert ds[147]['gt_path'].endswith('0001.jpg') and ds[148]['lq_path'].endswith('0001_1_0.1.jpg')
    sub = _ds(phase='train', gt_size=16, protocol='three_task', protocol_root=str(tmp_path),
              protocol_labels=['dehaze'])
    assert len(sub) == 2 and {sub[i]['label'] for i in range(2)} == {4}


def test_crop_multiple(cdd):
    ds = _ds(cdd11={'root': str(cdd / 'disk' / 'train'), 'categories': ['rain']}, crop_multiple=20)
    assert ds[0]['lq'].shape == ds[0]['gt'].shape == (3, 40, 60)
    with pytest.raises(ValueError, match=r'astronaut_0.png \(48 x 64\) is smaller than crop_multiple 50'):
        _ds(cdd11={'root': str(cdd / 'disk' / 'train'), 'categories': ['rain']}, crop_multiple=50)[0]


# ------------------------------------------------------------------------------------------------- conversion
def _png(img):
    return cv2.imencode('.png', img)[1].tobytes()


def test_grey_rgba_16bit_conversion():
    rgb = photo_crop('astronaut', (16, 16), 200, 200)
    bgr = np.ascontiguousarray(rgb[..., ::-1])
    grey = cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY)
    out = decode_image(_png(grey), 'g.png')
    assert out.shape == (16, 16, 3) and np.array_equal(out[..., 0], out[..., 2])
    assert np.allclose(out[..., 1], grey / 255.0)
    bgra = np.concatenate([bgr, np.full((16, 16, 1), 7, np.uint8)], axis=2)
    assert np.allclose(decode_image(_png(bgra), 'a.png'), bgr / 255.0)  # alpha dropped, colour kept
    deep = bgr.astype(np.uint16) * 257  # 8-bit values spread over 16 bits
    deep[0, 0] = 65535
    out = decode_image(_png(deep), 'd.png')
    assert out.dtype == np.float32 and out[0, 0, 0] == 1.0
    assert np.allclose(out[1:], bgr[1:] / 255.0, atol=1e-6)
    grey16 = cv2.cvtColor(deep, cv2.COLOR_BGR2GRAY)
    assert decode_image(_png(grey16), 'g16.png').shape == (16, 16, 3)


def test_grey_pairs_in_the_dataset(tmp_path):
    for folder in ('gt', 'lq'):
        os.makedirs(tmp_path / folder)
    rgb = photo_crop('rocket', (24, 24), 100, 300)
    cv2.imwrite(str(tmp_path / 'gt' / 'x.png'), cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY))
    cv2.imwrite(str(tmp_path / 'lq' / 'x.png'), (cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY).astype(np.uint16) * 200))
    s = _ds(sources=[{'label': 'x', 'dataroot_gt': str(tmp_path / 'gt'), 'dataroot_lq': str(tmp_path / 'lq')}])[0]
    assert s['gt'].shape == s['lq'].shape == (3, 24, 24)


# ---------------------------------------------------------------------------------------------------- bad data
@pytest.fixture
def pair_dirs(tmp_path):
    imgs = _photos((32, 40))
    for folder in ('clear', 'low'):
        os.makedirs(tmp_path / folder)
        for name, img in imgs:
            cv2.imwrite(str(tmp_path / folder / f'{name}.png'), (img * 255).astype(np.uint8))
    return tmp_path


def _pair_opt(root):
    return {'sources': [{'label': 'low', 'dataroot_gt': str(root / 'clear'), 'dataroot_lq': str(root / 'low')}]}


def test_truncated_image_names_the_file(pair_dirs):
    path = pair_dirs / 'low' / 'coffee_1.png'
    data = path.read_bytes()
    path.write_bytes(data[:len(data) // 3])
    ds = _ds(**_pair_opt(pair_dirs))
    with pytest.raises(OSError, match='coffee_1.png.*(unreadable|truncated)'):
        ds[1]
    jpg = pair_dirs / 'x.jpg'
    cv2.imwrite(str(jpg), photo_crop('coffee', (64, 64), 100, 100))
    assert decode_image(jpg.read_bytes(), 'x.jpg').shape == (64, 64, 3)
    with pytest.raises(OSError, match='x.jpg: truncated JPEG'):
        decode_image(jpg.read_bytes()[:-300], 'x.jpg')
    path.write_bytes(b'not an image at all')
    with pytest.raises(OSError, match='cannot decode image .*coffee_1.png'):
        ds[1]


def test_size_mismatch_names_both_files(pair_dirs):
    img = cv2.imread(str(pair_dirs / 'low' / 'rocket_2.png'))
    cv2.imwrite(str(pair_dirs / 'low' / 'rocket_2.png'), img[:30])
    with pytest.raises(ValueError, match=r'size mismatch: .*clear.rocket_2.png .*low.rocket_2.png'):
        _ds(**_pair_opt(pair_dirs))[2]


def test_file_missing_from_a_category_folder(pair_dirs):
    os.remove(pair_dirs / 'low' / 'coffee_1.png')
    with pytest.raises(FileNotFoundError, match=r'clear.coffee_1.png is missing from .*low'):
        _ds(**_pair_opt(pair_dirs))
    with pytest.raises(FileNotFoundError, match='coffee_1'):
        _ds(cdd11={'root': str(pair_dirs), 'categories': ['low']})


def test_extra_lq_file_without_gt(pair_dirs):
    cv2.imwrite(str(pair_dirs / 'low' / 'stray.png'), np.zeros((32, 40, 3), np.uint8))
    with pytest.raises(FileNotFoundError, match=r'low.stray.png has no counterpart in .*clear'):
        _ds(**_pair_opt(pair_dirs))


def test_empty_and_absent_folders(tmp_path):
    os.makedirs(tmp_path / 'empty')
    with pytest.raises(ValueError, match=r'empty folder: .*empty'):
        _ds(sources=[{'label': 'x', 'dataroot_gt': str(tmp_path / 'empty'), 'synthesis': 'haze'}])
    with pytest.raises(FileNotFoundError, match='nowhere'):
        _ds(sources=[{'label': 'x', 'dataroot_gt': str(tmp_path / 'nowhere'), 'synthesis': 'haze'}])
    with pytest.raises(FileNotFoundError, match=r'clear'):
        _ds(cdd11={'root': str(tmp_path / 'empty')})


def test_lmdb_key_absent(cdd, tmp_path):
    import shutil
    for name in ('clear', 'low'):
        shutil.copytree(cdd / 'lmdb' / 'train' / f'{name}.lmdb', tmp_path / f'{name}.lmdb')
        with open(tmp_path / f'{name}.lmdb' / 'meta_info.txt', 'a') as f:
            f.write('ghost.png (48,64,3) 1\n')
    ds = _ds(cdd11={'root': str(tmp_path), 'categories': ['low']}, io_backend={'type': 'lmdb'})
    keys = [osp.basename(p) for p in ds.sources[0].gt_paths]
    with pytest.raises(KeyError, match=r"LMDB key 'ghost' absent from .*clear.lmdb"):
        ds[keys.index('ghost')]


def test_unknown_label_and_keys(cdd):
    root = str(cdd / 'disk' / 'train')
    with pytest.raises(ValueError, match="unknown label 'fog'"):
        _ds(cdd11={'root': root, 'categories': ['fog']})
    with pytest.raises(ValueError, match="unknown label 'derain'"):
        _ds(labels=['low'], sources=[{'label': 'derain', 'dataroot_gt': root + '/clear', 'synthesis': 'rain'}])
    with pytest.raises(KeyError, match='dataroot_gtt'):
        _ds(sources=[{'label': 'x', 'dataroot_gtt': root + '/clear', 'synthesis': 'rain'}])
    with pytest.raises(KeyError, match='gt_szie'):
        _ds(cdd11={'root': root}, gt_szie=64)
    with pytest.raises(KeyError, match='catgories'):
        _ds(cdd11={'root': root, 'catgories': ['low']})
    with pytest.raises(ValueError, match="unknown degradation 'fog'"):
        _ds(sources=[{'label': 'x', 'dataroot_gt': root + '/clear', 'synthesis': {'fog': {}}}])
    with pytest.raises(ValueError, match=r"unknown parameter\(s\) \['sigam'\]"):
        _ds(sources=[{'label': 'x', 'dataroot_gt': root + '/clear', 'synthesis': {'noise': {'sigam': 5}}}])
    with pytest.raises(ValueError, match='training only'):
        _ds(cdd11={'root': root}, gt_size=64)
    with pytest.raises(ValueError, match='gt_size'):
        _ds(phase='train', cdd11={'root': root})
    with pytest.raises(ValueError, match="sampling must be 'balanced' or 'proportional'"):
        _ds(phase='train', gt_size=16, cdd11={'root': root}, sampling='uniform')


def test_haze_from_supplied_depth_maps(tmp_path):
    for folder in ('clear', 'depth'):
        os.makedirs(tmp_path / folder)
    img = photo_crop('astronaut', (40, 40), 100, 100) // 2  # <= 0.5, far from the airlight: t is measurable
    cv2.imwrite(str(tmp_path / 'clear' / 'p.png'), img)
    ramp = np.tile(np.linspace(0, 65535, 40)[:, None], (1, 40)).astype(np.uint16)  # 16-bit depth, far at bottom
    cv2.imwrite(str(tmp_path / 'depth' / 'p.png'), ramp)
    source = {'label': 'dehaze', 'dataroot_gt': str(tmp_path / 'clear'), 'dataroot_depth': str(tmp_path / 'depth'),
              'synthesis': {'haze': {'beta': 2.0, 'airlight': 0.8}}}
    s = _ds(sources=[source])[0]
    t = np.exp(-2.0 * np.linspace(0, 1, 40, dtype=np.float32))[None, :, None]
    expect = s['gt'].numpy() * t + 0.8 * (1 - t)
    assert np.allclose(s['lq'].numpy(), expect, atol=1e-5)
    crop = _ds(phase='train', gt_size=20, use_hflip=False, use_rot=False, sources=[source])[0]
    assert crop['lq'].shape == (3, 20, 20) and json.loads(crop['degradation_params'])['haze.beta'] == 2.0
    # the crop keeps the depth of its rows in the whole image (no renormalisation per crop)
    gt, lq = crop['gt'].numpy(), crop['lq'].numpy()
    t_rows = ((lq - 0.8) / (gt - 0.8)).mean(axis=(0, 2))
    fits = [np.allclose(t_rows, np.exp(-2.0 * (top + np.arange(20)) / 39), atol=2e-3) for top in range(21)]
    assert any(fits)
    os.remove(tmp_path / 'depth' / 'p.png')
    cv2.imwrite(str(tmp_path / 'depth' / 'q.png'), ramp)
    with pytest.raises(FileNotFoundError, match='no depth map'):
        _ds(sources=[source])
