"""Every option file in options/ parses, passes the CLI's pre-check, builds its datasets (MiniCDD generated once per
session; other data where present, else their keys are checked), its model on the CPU and its network at a small
input. The MiniCDD smoke configurations train 10 iterations through ``interir train`` and write per-label metrics."""
import csv
import glob
import os
import re
import sys

import pytest
import torch
import yaml

import interir_plugin  # noqa: F401  (shims and registration before BasicSR is used)
from conftest import REPO
from interir_plugin.data.degradations import CDD11_CATEGORIES

OPTION_FILES = sorted(glob.glob(os.path.join(REPO, 'options', '**', '*.yml'), recursive=True))
SMOKE = {'InterIR-S': 'options/train/InterIR/train_InterIR-S_MiniCDD_smoke.yml',
         'DGUNet-S': 'options/train/DGUNet/train_DGUNet-S_MiniCDD_smoke.yml'}
#: keys BasicSR's PairedImageDataset and data loader read.
PAIRED_KEYS = ('name', 'type', 'phase', 'scale', 'dataroot_gt', 'dataroot_lq', 'meta_info_file', 'filename_tmpl',
               'io_backend', 'gt_size', 'use_hflip', 'use_rot', 'use_shuffle', 'num_worker_per_gpu',
               'batch_size_per_gpu', 'dataset_enlarge_ratio', 'prefetch_mode', 'pin_memory', 'persistent_workers',
               'total_batch_size')


@pytest.fixture(scope='session')
def minicdd(tmp_path_factory):
    """MiniCDD made by the data engineer's ``interir prepare minicdd`` logic, once per session."""
    from interir_plugin.data.preparation import make_minicdd

    root = str(tmp_path_factory.mktemp('data') / 'MiniCDD')
    make_minicdd(root, seed=0)
    return root


#: network_g (as YAML) -> number of stage outputs, filled by the first file that builds it.
_NUM_OUTPUTS = {}


def _train_names():
    names = {}
    for path in OPTION_FILES:
        if os.path.basename(path).startswith('train_'):
            with open(path) as f:
                opt = yaml.safe_load(f)
            names[opt['name']] = opt
    return names


def _parse(path, root, is_train):
    """BasicSR's own ``parse_options`` on ``path`` (experiment folders would go under ``root``)."""
    from basicsr.utils.options import parse_options

    saved = sys.argv
    sys.argv = ['interir', '-opt', path]
    try:
        opt, _ = parse_options(root, is_train=is_train)
    finally:
        sys.argv = saved
    return opt


def _dataset(dopt, minicdd):
    """Build the dataset if its data is present (MiniCDD: the generated copy); else check its keys."""
    from basicsr.data import build_dataset

    from interir_plugin.data.multi_degradation_dataset import BASICSR_KEYS, DATASET_KEYS, MODEL_KEYS

    if dopt['type'] == 'MultiDegradationPairedDataset':
        if dopt.get('protocol') == 'minicdd':
            dopt['protocol_root'] = minicdd
        present = os.path.isdir(dopt.get('protocol_root') or '')
        known = BASICSR_KEYS + MODEL_KEYS + DATASET_KEYS
    else:
        assert dopt['type'] == 'PairedImageDataset'
        present = all(os.path.isdir(dopt[k]) for k in ('dataroot_gt', 'dataroot_lq'))
        known = PAIRED_KEYS
    assert not set(dopt) - set(known), f'unknown dataset keys {set(dopt) - set(known)}'
    if not present:
        return None
    dataset = build_dataset(dopt)
    sample = dataset[0]
    assert len(dataset) > 0 and sample['lq'].shape == sample['gt'].shape
    if dopt['phase'] == 'train':
        assert sample['gt'].shape[-1] == dopt['gt_size']
    return dataset


_LOADED = set()


@pytest.mark.parametrize('path', OPTION_FILES, ids=lambda p: os.path.relpath(p, os.path.join(REPO, 'options')))
def test_option_file_builds(path, tmp_path, minicdd):
    from basicsr.models import build_model

    from interir_plugin.tools.options import check_option_file

    parts = os.path.relpath(path, os.path.join(REPO, 'options')).split(os.sep)
    kind = parts[-1].split('_')[0]
    is_train = kind == 'train'
    assert kind in ('train', 'test'), f'{parts[-1]}: an option file is named train_*.yml or test_*.yml'
    if parts[0] in ('train', 'test'):  # options/<kind>/<Model>/<kind>_<Model>[-variant]_<setting>.yml
        assert parts[0] == kind and len(parts) == 3
        assert re.fullmatch(rf'{kind}_{parts[1]}(-\w+)?_\w+\.yml', parts[2]), f'{parts[2]}: not {kind}_<Model>_*.yml'
    check_option_file(path, is_train=is_train)
    opt = _parse(path, str(tmp_path), is_train)
    if is_train:
        assert re.fullmatch(r'\d{3}_[\w\-]+', opt['name'])
        assert opt['logger']['save_checkpoint_freq'] <= opt['train']['total_iter']
    else:  # a test file loads the weights its training file writes, into the same network
        match = re.fullmatch(r'experiments/(.+)/models/net_g_latest\.pth', opt['path']['pretrain_network_g'])
        assert match, opt['path']['pretrain_network_g']
        trained = _train_names()[match.group(1)]
        assert trained['network_g'] == opt['network_g']
        expect_key = 'params_ema' if trained['train'].get('ema_decay', 0) > 0 else 'params'
        assert opt['path']['param_key_g'] == expect_key
        val_sets = {d['name'] for p, d in trained['datasets'].items() if p.startswith('val')}
        assert {d['name'] for d in opt['datasets'].values()} == val_sets  # tested on what it validated on
    assert opt['model_type'] == 'UnfoldingRestorationModel'
    phase = 'val' if is_train else 'test'
    assert [p for p in opt['datasets'] if p != 'train'] == [f'{phase}_{i}' for i in
                                                          range(1, len(opt['datasets']) + (0 if is_train else 1))]
    for dopt in opt['datasets'].values():
        _dataset(dopt, minicdd)

    if is_train:  # the file's total batch is its GPUs x batch per GPU, as written (no launcher: DataParallel)
        from interir_plugin.models.unfolding_model import check_total_batch

        total = check_total_batch(opt)
        stated = opt['datasets']['train'].pop('total_batch_size', None)  # the CPU build below has other GPUs
        assert stated in (None, total)
        if opt['num_gpu'] != 0 and not opt['train'].get('time_budget'):  # a GPU file states it (issue 25)
            assert stated == total and opt['datasets']['train'].get('persistent_workers') is True
            assert opt['datasets']['train'].get('pin_memory') is True and opt['dist_params']['timeout_minutes'] >= 60
    opt['num_gpu'] = 0
    ckpt_key, strict = opt['path']['param_key_g'], opt['path']['strict_load_g']
    opt['path']['pretrain_network_g'] = None
    for key in ('models', 'training_states', 'log', 'visualization'):
        opt['path'][key] = str(tmp_path / key)
    model = build_model(opt)
    net = model.get_bare_model(model.net_g).eval()
    key = yaml.safe_dump(dict(opt['network_g']))
    if key not in _NUM_OUTPUTS:  # one forward per distinct network (many files share one)
        m = model.size_multiple
        with torch.no_grad():
            outputs = model.run_network(net, torch.rand(1, 3, 3 * m, 2 * m))
        assert all(o.shape == (1, 3, 3 * m, 2 * m) and torch.isfinite(o).all() for o in outputs)
        _NUM_OUTPUTS[key] = len(outputs)
    if is_train:
        weights = opt['train'].get('stage_weights')
        assert weights is None or len(weights) == _NUM_OUTPUTS[key]
    elif (key, ckpt_key, strict) not in _LOADED:  # the checkpoint entry the file names loads strictly (once per net)
        torch.save({ckpt_key: net.state_dict()}, tmp_path / 'ckpt.pth')
        model.load_network(model.net_g, str(tmp_path / 'ckpt.pth'), strict, ckpt_key)
        _LOADED.add((key, ckpt_key, strict))


def test_every_model_and_protocol_has_its_files():
    names = {os.path.relpath(p, os.path.join(REPO, 'options')) for p in OPTION_FILES}
    for model in ('InterIR', 'InterIR-S', 'DGUNet'):
        folder = model.split('-')[0]
        for setting in ('CDD11', '3Task', '5Task', 'MiniCDD'):
            for kind in ('train', 'test'):
                assert os.path.join(kind, folder, f'{kind}_{model}_{setting}.yml') in names
    for model in ('DGUNet', 'DGUNetPlus'):
        for setting in ('GoPro', 'SIDD', 'Rain13K'):
            for kind in ('train', 'test'):
                assert os.path.join(kind, model, f'{kind}_{model}_{setting}.yml') in names
    for path in SMOKE.values():
        assert path.replace('/', os.sep).split(os.sep, 1)[1] in names


@pytest.fixture(scope='session')
def small_test_protocol(minicdd, tmp_path_factory):
    """A protocol file whose test split is a 64x64 crop of MiniCDD's first test image in every category (every label,
    fast validation even for DGUNet, whose CPU forward at 256x256 takes seconds)."""
    import cv2

    folder = tmp_path_factory.mktemp('small_test')
    first = sorted(os.listdir(os.path.join(minicdd, 'test', 'clear')))[0]
    for category in ('clear', *CDD11_CATEGORIES):
        os.makedirs(folder / 'test' / category)
        img = cv2.imread(os.path.join(minicdd, 'test', category, first), cv2.IMREAD_UNCHANGED)
        cv2.imwrite(str(folder / 'test' / category / first), img[96:160, 96:160])
    protocol = {'name': 'minicdd_small', 'labels': list(CDD11_CATEGORIES), 'default_root': str(folder),
                'splits': {'test': {'cdd11': {'root': str(folder / 'test')}}}}
    path = str(folder / 'minicdd_small.yml')
    with open(path, 'w') as f:
        yaml.safe_dump(protocol, f)
    return path


@pytest.mark.parametrize('model', sorted(SMOKE))
def test_smoke_config_trains_through_interir_train(model, minicdd, small_test_protocol, tmp_path, monkeypatch):
    """10 iterations (batch 2 of 32x32 instead of 4 of 64x64) on the generated MiniCDD's train split, validation on
    64x64 crops of every category (the option's own val_freq: once, after training)."""
    from interir_plugin.cli import main

    option = os.path.join(REPO, SMOKE[model])
    monkeypatch.chdir(tmp_path)
    os.makedirs('datasets')
    os.symlink(minicdd, os.path.join('datasets', 'MiniCDD'))  # the option's relative data path
    assert main(['train', '-opt', option, '--force_yml', 'train:total_iter=10', 'logger:save_checkpoint_freq=10',
                 'train:scheduler:periods=[10]', 'datasets:train:batch_size_per_gpu=2', 'datasets:train:gt_size=32',
                 f'datasets:val_1:protocol={small_test_protocol}']) == 0
    with open(option) as f:
        name = yaml.safe_load(f)['name']
    exp = tmp_path / 'experiments' / name
    csvs = glob.glob(str(exp / 'metrics' / 'MiniCDD_test_*.csv'))
    assert len(csvs) == 1  # val_freq > total_iter: only the validation after training
    with open(csvs[0]) as f:
        rows = list(csv.DictReader(f))
    assert [r['label'] for r in rows] == [*CDD11_CATEGORIES, 'mean_over_labels', 'overall']
    assert all(r['images'] == '1' for r in rows[:11]) and rows[-1]['images'] == '11'
    psnr = [float(r['psnr']) for r in rows]
    assert all(5 < p < 60 for p in psnr)
    assert psnr[-2] == pytest.approx(sum(psnr[:11]) / 11, abs=1e-4)
    state = torch.load(exp / 'training_states' / '10.state', weights_only=True)
    assert state['iter'] == 10
    weights = torch.load(exp / 'models' / 'net_g_latest.pth', weights_only=True)['params']
    assert all(torch.isfinite(v).all() for v in weights.values())
