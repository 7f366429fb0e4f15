"""`interir prepare`: MiniCDD (deterministic, CDD-11 layout, readable by the dataset), meta lists, LMDBs, synth."""
import filecmp
import os
import os.path as osp

import cv2
import numpy as np
import pytest

import interir_plugin  # noqa: F401  (shims before basicsr)
from conftest import REPO, photo_crop
from interir_plugin.cli import main
from interir_plugin.data.degradations import CATEGORY_PARTS, CDD11_CATEGORIES, parse_spec
from interir_plugin.data.multi_degradation_dataset import MultiDegradationPairedDataset
from interir_plugin.data.preparation import (
    LORO_HELDOUT_RENDERERS,
    MINICDD_LORO_SPLITS,
    make_minicdd,
    minicdd_split_names,
    synth_folder,
    write_meta,
)
from interir_plugin.data.renderers import DEFAULT_RENDERERS, RENDERERS
from interir_plugin.data.sources import load_protocol
from interir_plugin.utils.presence import CLEAR_LABEL


def _tree(root):
    return sorted(osp.relpath(osp.join(d, f), root) for d, _, fs in os.walk(root) for f in fs)


@pytest.fixture(scope='module')
def minicdd(tmp_path_factory):
    out = tmp_path_factory.mktemp('minicdd') / 'MiniCDD'
    assert main(['prepare', 'minicdd', '--out', str(out)]) == 0
    return out


def test_minicdd_layout_and_size(minicdd):
    for split, count, shape in (('train', 36, (192, 192, 3)), ('test', 6, (256, 256, 3)),
                                ('heldout', 20, (192, 192, 3))):
        names = sorted(os.listdir(minicdd / split / 'clear'))
        assert len(names) == count
        for folder in ('clear', *CDD11_CATEGORIES):
            assert sorted(os.listdir(minicdd / split / folder)) == names
        assert cv2.imread(str(minicdd / split / 'low_haze_rain' / names[0])).shape == shape
    for split, source in MINICDD_LORO_SPLITS:  # the LORO splits: the same clear tiles, other degradations
        names = sorted(os.listdir(minicdd / source / 'clear'))
        assert sorted(os.listdir(minicdd / split / 'clear')) == names
        for folder in CDD11_CATEGORIES:
            assert sorted(os.listdir(minicdd / split / folder)) == names
        match, mismatch, _ = filecmp.cmpfiles(minicdd / split / 'clear', minicdd / source / 'clear', names,
                                              shallow=False)
        assert match == names
        assert all(not filecmp.cmp(minicdd / split / c / n, minicdd / source / c / n, shallow=False)
                   for c in CDD11_CATEGORIES for n in names[:2])
    photos = {split: {n.rsplit('_', 1)[0] for n in os.listdir(minicdd / split / 'clear')}
              for split in ('train', 'test', 'heldout')}
    assert not photos['train'] & photos['test'] and not photos['heldout'] & (photos['train'] | photos['test'])
    size = sum(osp.getsize(osp.join(d, f)) for d, _, fs in os.walk(minicdd) for f in fs)
    assert size < 100 * 2**20


def test_minicdd_is_deterministic(minicdd, tmp_path):
    again = tmp_path / 'again'
    make_minicdd(str(again), seed=0)
    files = _tree(minicdd)
    assert files == _tree(again) and len(files) == 12 * (36 + 6 + 20) + 12 * (20 + 6) + 1
    match, mismatch, errors = filecmp.cmpfiles(minicdd, again, files, shallow=False)
    assert not mismatch and not errors


def test_minicdd_refuses_to_overwrite(minicdd, capsys):
    with pytest.raises(SystemExit, match='exist.*--force'):
        main(['prepare', 'minicdd', '--out', str(minicdd)])


def test_minicdd_meta_lists_match_the_repository(minicdd, tmp_path):
    written = write_meta(str(minicdd), str(tmp_path))
    names = sorted(f'{split}.txt' for split in minicdd_split_names())
    assert sorted(osp.basename(p) for p in written) == names
    for name in names:
        assert (tmp_path / name).read_text() == open(osp.join(REPO, 'datasets_meta', 'minicdd', name)).read()


def test_minicdd_through_the_protocol(minicdd):
    opt = {'protocol': 'minicdd', 'protocol_root': str(minicdd)}
    train = MultiDegradationPairedDataset({**opt, 'phase': 'train', 'gt_size': 64, 'sampling': 'balanced'})
    test = MultiDegradationPairedDataset({**opt, 'phase': 'val'})
    assert len(train) == 396 and len(test) == 66
    assert {test[i]['label_name'] for i in range(0, 66, 6)} == set(CDD11_CATEGORIES)
    assert train[0]['lq'].shape == (3, 64, 64)


def test_minicdd_loro_splits_use_the_held_out_renderers(minicdd):
    import json

    manifest = json.loads((minicdd / 'manifest.json').read_text())
    assert sorted(manifest['splits']) == sorted(minicdd_split_names())
    for split, source in MINICDD_LORO_SPLITS:
        entry = manifest['splits'][split]
        assert entry['renderers'] == LORO_HELDOUT_RENDERERS and entry['clear_from'] == source
        assert entry['images'] == manifest['splits'][source]['images']
        for category, per_image in entry['params'].items():
            used = {CATEGORY_PARTS[p]: LORO_HELDOUT_RENDERERS[CATEGORY_PARTS[p]] for p in category.split('_')}
            for params in per_image.values():
                assert {k.split('.')[0]: v for k, v in params.items() if k.endswith('.renderer')} == used
    for params in manifest['splits']['heldout']['params']['low_haze_rain'].values():
        assert not any(k.endswith('.renderer') for k in params)  # the original splits as they always were
    opt = {'protocol': 'minicdd_loro', 'protocol_root': str(minicdd)}
    heldout = MultiDegradationPairedDataset({**opt, 'phase': 'val', 'protocol_split': 'heldout'})
    test = MultiDegradationPairedDataset({**opt, 'phase': 'val'})
    assert len(heldout) == 220 and len(test) == 66 and '/loro_test/' in test[0]['lq_path']
    train = MultiDegradationPairedDataset({**opt, 'phase': 'train', 'gt_size': 48, 'sampling': 'balanced'})
    assert len(train) == 12 * 28 * 100 and train[0]['lq'].shape == (3, 48, 48)


def test_demo_finds_minicdd_only_with_its_loro_splits(minicdd, tmp_path, monkeypatch):
    import shutil

    from interir_plugin.tools import demo

    built, logs = [], []
    monkeypatch.setattr('interir_plugin.data.preparation.make_minicdd',
                        lambda root, seed, force: built.append(root) or {'splits': {}})
    monkeypatch.setattr(demo, 'DATA_ROOT', str(minicdd))
    assert demo.ensure_minicdd(logs.append) == str(minicdd) and not built and 'found' in logs[-1]
    older = tmp_path / 'older'  # a MiniCDD made before the LORO splits existed is rebuilt
    for split in ('train', 'test', 'heldout'):
        shutil.copytree(minicdd / split / 'clear', older / split / 'clear')
    monkeypatch.setattr(demo, 'DATA_ROOT', str(older))
    demo.ensure_minicdd(logs.append)
    assert built == [str(older)] and 'built' in logs[-1]


def test_loro_protocol_trains_on_every_renderer_but_the_held_out_one():
    held = set(LORO_HELDOUT_RENDERERS.items())
    assert not held & set(DEFAULT_RENDERERS.items())  # a new model is held out, never the original
    labels, sources, cdd11 = load_protocol('minicdd_loro', '/data', 'train')
    assert [s['label'] for s in sources] == labels == [*CDD11_CATEGORIES, CLEAR_LABEL] and cdd11 is None
    clear = sources.pop()  # identity pairs: the clean tiles as they are
    assert clear['synthesis'] == {'noise': {'sigma': 0}} and clear['repeat'] == 100
    for s in sources:
        assert s['synthesis']['category'] == s['label'] and s['repeat'] == 100
        assert s['meta_info_file'].endswith('minicdd/train_synth.txt')
        trained = {(c, n) for c, names in s['synthesis']['renderers'].items() for n in names}
        assert trained == {(c, n) for c in RENDERERS for n in RENDERERS[c]} - held
    # issue 22 item 4: the same train photos and repeat, degraded by the held-out renderers only
    same = ('dataroot_gt', 'meta_info_file', 'repeat')
    train = {s['label']: s for s in [*sources, clear]}
    _, heldout_sources, cdd11 = load_protocol('minicdd_loro', '/data', 'train_heldout_renderers')
    assert cdd11 is None
    assert {s['label'] for s in heldout_sources} >= set(CDD11_CATEGORIES)
    for s in heldout_sources:
        assert {k: s.get(k) for k in same} == {k: train[s['label']].get(k) for k in same}
        if 'synthesis' in s:
            assert s['synthesis']['category'] == s['label']
            steps = parse_spec(s['synthesis'])  # a valid spec: every part of the label by its held-out renderer
            assert steps and all(kw == {'renderer': LORO_HELDOUT_RENDERERS[name]} for name, kw in steps)
            used = {(c, n) for c, names in s['synthesis']['renderers'].items()
                    for n in ([names] if isinstance(names, str) else names)}
            assert used == held
    for split in ('heldout', 'test'):
        _, sources, cdd11 = load_protocol('minicdd_loro', '/data', split)
        assert not sources and cdd11['root'] == f'/data/loro_{split}'
        assert cdd11['meta_info_file'].endswith(f'minicdd/loro_{split}.txt')


def test_renderer_protocol_has_a_split_per_renderer():
    import yaml

    with open(osp.join(REPO, 'datasets_meta', 'minicdd_renderers.yml'), encoding='utf-8') as f:
        splits = yaml.safe_load(f)['splits']
    parts = {v: k for k, v in CATEGORY_PARTS.items()}
    expected = {}
    for photos in ('heldout', 'test'):
        for component, names in RENDERERS.items():
            categories = [c for c in CDD11_CATEGORIES if parts[component] in c.split('_')]
            for name in names:
                expected[f'{photos}_{name}'] = {'sources': [
                    {'label': c, 'dataroot_gt': f'{{root}}/{photos}/clear',
                     'meta_info_file': f'{{meta}}/minicdd/{photos}.txt',
                     'synthesis': {'category': c, 'renderers': {component: name}}} for c in categories]}
    assert splits == expected
    labels, sources, _ = load_protocol('minicdd_renderers', '/data', 'test_occluding')
    assert labels == list(CDD11_CATEGORIES) and sources[0]['dataroot_gt'] == '/data/test/clear'


def test_lmdb_command_and_keys(tmp_path):
    src = tmp_path / 'src'
    os.makedirs(src / 'gt')
    os.makedirs(src / 'lq')
    img = photo_crop('chelsea', (40, 40), 50, 150)
    for folder in ('gt', 'lq'):
        cv2.imwrite(str(src / folder / 'img.0.5.png'), img)
    assert main(['prepare', 'lmdb', '--root', str(src), '--out', str(tmp_path / 'db')]) == 0
    assert (tmp_path / 'db' / 'gt.lmdb' / 'meta_info.txt').read_text().startswith('img_0_5.png (40,40,3)')
    db = tmp_path / 'db'
    ds = MultiDegradationPairedDataset({'phase': 'val', 'io_backend': {'type': 'lmdb'}, 'sources': [
        {'label': 'x', 'dataroot_gt': str(db / 'gt.lmdb'), 'dataroot_lq': str(db / 'lq.lmdb')}]})
    assert np.allclose(ds[0]['gt'].numpy().transpose(1, 2, 0), img[..., ::-1] / 255.0)
    with pytest.raises(SystemExit, match='exist'):
        main(['prepare', 'lmdb', '--root', str(src), '--out', str(tmp_path / 'db')])
    assert main(['prepare', 'lmdb', '--root', str(src), '--out', str(tmp_path / 'db'), '--force']) == 0


def test_synth_command(tmp_path):
    src = tmp_path / 'clean'
    os.makedirs(src)
    cv2.imwrite(str(src / 'a.png'), photo_crop('coffee', (32, 48), 100, 100))
    cv2.imwrite(str(src / 'b.jpg'), cv2.cvtColor(photo_crop('rocket', (32, 48), 100, 300), cv2.COLOR_RGB2GRAY))
    out = tmp_path / 'out'
    assert main(['prepare', 'synth', '--input', str(src), '--out', str(out), '--categories', 'low', 'haze_snow']) == 0
    assert sorted(os.listdir(out)) == ['clear', 'haze_snow', 'low']
    assert sorted(os.listdir(out / 'low')) == ['a.png', 'b.png']
    assert cv2.imread(str(out / 'clear' / 'b.png'), cv2.IMREAD_UNCHANGED).shape == (32, 48, 3)  # grey -> 3 channels
    # another seed draws other degradations; the clean images stay
    synth_folder(str(src), str(tmp_path / 'seed1'), ('low', 'haze_snow'), seed=1)
    assert filecmp.cmp(out / 'clear' / 'a.png', tmp_path / 'seed1' / 'clear' / 'a.png', shallow=False)
    assert not filecmp.cmp(out / 'low' / 'a.png', tmp_path / 'seed1' / 'low' / 'a.png', shallow=False)
    with pytest.raises(SystemExit):  # argparse rejects an unknown category
        main(['prepare', 'synth', '--input', str(src), '--out', str(tmp_path / 'x'), '--categories', 'fog'])
    with pytest.raises(SystemExit, match='exist'):
        main(['prepare', 'synth', '--input', str(src), '--out', str(out)])
