"""The bad-input corpus: images, option files and checkpoints that users get wrong. Each case either raises an error
that names the culprit (file, key or value) or is handled by a documented rule (docs/robustness.md); none changes
an input, an output or a checkpoint on disk."""
import hashlib
import os

import cv2
import numpy as np
import pytest
import torch

from conftest import photo_crop, write_yaml
from interir_plugin.data.multi_degradation_dataset import MultiDegradationPairedDataset
from interir_plugin.tools.options import check_option_file

TINY_DGUNET = {'type': 'DGUNet', 'n_feat': 8, 'scale_unetfeats': 4, 'scale_orsnetfeats': 4, 'depth': 1}


# ----------------------------------------------------------------------------------------------------------- images
def _bgr(size=(24, 32), name='astronaut', top=0):
    return cv2.cvtColor(photo_crop(name, size, top=top), cv2.COLOR_RGB2BGR)


def _pair_dirs(root, n=2, size=(24, 32)):
    gt, lq = root / 'gt', root / 'lq'
    gt.mkdir(parents=True, exist_ok=True)
    lq.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        img = _bgr(size, top=8 * i)
        cv2.imwrite(str(gt / f'{i}.png'), img)
        cv2.imwrite(str(lq / f'{i}.png'), (img * 0.5).astype(np.uint8))
    return gt, lq


def _dataset(gt, lq, phase='test', **extra):
    opt = {'name': 'corpus', 'type': 'MultiDegradationPairedDataset', 'phase': phase,
           'sources': [{'label': 'rain', 'dataroot_gt': str(gt), 'dataroot_lq': str(lq)}], **extra}
    return MultiDegradationPairedDataset(opt)


def _digest(folder):
    """Hash of every file under ``folder``: a bad input must leave the inputs exactly as they were."""
    h = hashlib.sha256()
    for dirpath, _, files in sorted(os.walk(folder)):
        for name in sorted(files):
            with open(os.path.join(dirpath, name), 'rb') as f:
                h.update(name.encode() + f.read())
    return h.hexdigest()


def _corrupt(path, how):
    data = open(path, 'rb').read()
    if how == 'zero_byte':
        data = b''
    elif how == 'truncated':
        data = data[: len(data) // 2]
    elif how == 'not_an_image':
        data = b'this is a text file, not a PNG\n' * 4
    with open(path, 'wb') as f:
        f.write(data)


@pytest.mark.parametrize('how', ['zero_byte', 'truncated', 'not_an_image'])
def test_image_undecodable_names_the_file(tmp_path, how):
    gt, lq = _pair_dirs(tmp_path)
    _corrupt(lq / '1.png', how)
    before = _digest(tmp_path)
    ds = _dataset(gt, lq)
    ds[0]  # the healthy pair still loads
    with pytest.raises(OSError, match=r'1\.png'):
        ds[1]
    assert _digest(tmp_path) == before


def test_image_wrong_extension_is_decoded_by_content(tmp_path):
    """Rule: images are decoded from their bytes, so a JPEG named .png loads (OpenCV sniffs the format)."""
    gt, lq = _pair_dirs(tmp_path)
    ok, jpeg = cv2.imencode('.jpg', _bgr())
    (lq / '0.png').write_bytes(jpeg.tobytes())
    sample = _dataset(gt, lq)[0]
    assert sample['lq'].shape == (3, 24, 32)


def test_image_smaller_than_the_training_crop_names_the_file(tmp_path):
    gt, lq = _pair_dirs(tmp_path, size=(1, 1))
    ds = _dataset(gt, lq, phase='train', gt_size=16)
    with pytest.raises(ValueError, match=r'0\.png'):
        ds[0]


def _restore(img_chw):
    from basicsr.models import build_model

    opt = {'name': 'corpus', 'model_type': 'UnfoldingRestorationModel', 'num_gpu': 0, 'is_train': False,
           'dist': False, 'scale': 1, 'network_g': TINY_DGUNET, 'path': {'pretrain_network_g': None},
           'val': {'metrics': None}}
    model = build_model(opt)
    return model.restore(img_chw[None])


@pytest.mark.parametrize('size', [(1, 1), (4, 300), (300, 3)], ids=['1x1', 'wide_4x300', 'tall_300x3'])
def test_image_tiny_or_extreme_aspect_is_padded_and_cropped_back(tmp_path, size):
    """Rule: test images of any size are reflect-padded to the network's multiple and cropped back."""
    gt, lq = _pair_dirs(tmp_path, n=1, size=size)
    sample = _dataset(gt, lq)[0]
    out = _restore(sample['lq'])
    assert out.shape == (1, 3, *size) and torch.isfinite(out).all()


@pytest.mark.parametrize('mode', ['grey', 'rgba', 'sixteen_bit'])
def test_image_modes_are_converted_by_the_documented_rule(tmp_path, mode):
    gt, lq = _pair_dirs(tmp_path, n=1)
    img = _bgr()
    if mode == 'grey':
        cv2.imwrite(str(lq / '0.png'), cv2.cvtColor(img, cv2.COLOR_BGR2GRAY))
        expected = np.repeat(cv2.cvtColor(img, cv2.COLOR_BGR2GRAY)[..., None], 3, axis=2) / 255.0
    elif mode == 'rgba':
        alpha = np.full(img.shape[:2] + (1,), 7, np.uint8)
        cv2.imwrite(str(lq / '0.png'), np.concatenate([img, alpha], axis=2))
        expected = img[..., ::-1] / 255.0  # alpha dropped, stored colour kept
    else:
        img16 = img.astype(np.uint16) * 257 + 3
        cv2.imwrite(str(lq / '0.png'), img16)
        expected = img16[..., ::-1] / 65535.0
    if mode == 'grey':
        expected = expected[..., ::-1]
    lq_t = _dataset(gt, lq)[0]['lq']
    np.testing.assert_allclose(lq_t.permute(1, 2, 0).numpy(), expected, atol=1e-6)


def test_image_pair_size_mismatch_names_both_files(tmp_path):
    gt, lq = _pair_dirs(tmp_path, n=1)
    cv2.imwrite(str(lq / '0.png'), _bgr((20, 32)))
    with pytest.raises(ValueError, match=r'(?s)gt.0\.png.*lq.0\.png|lq.0\.png.*gt.0\.png'):
        _dataset(gt, lq)[0]


def test_image_missing_partner_names_the_file(tmp_path):
    gt, lq = _pair_dirs(tmp_path, n=2)
    os.remove(lq / '1.png')
    with pytest.raises(FileNotFoundError, match=r'1\.png'):
        _dataset(gt, lq)


def test_cdd11_file_missing_from_one_category_names_file_and_folder(tmp_path):
    root = tmp_path / 'cdd'
    for cat in ('clear', 'low', 'haze'):
        (root / cat).mkdir(parents=True)
        for i in range(2):
            cv2.imwrite(str(root / cat / f'{i}.png'), _bgr(top=4 * i))
    os.remove(root / 'haze' / '1.png')
    opt = {'name': 'c', 'type': 'MultiDegradationPairedDataset', 'phase': 'test',
           'cdd11': {'root': str(root), 'categories': ['low', 'haze']}}
    with pytest.raises(FileNotFoundError, match=r'(?s)1\.png.*haze'):
        MultiDegradationPairedDataset(opt)


@pytest.mark.parametrize('case', ['empty_folder', 'missing_folder'])
def test_data_folder_empty_or_missing_names_it(tmp_path, case):
    gt, lq = _pair_dirs(tmp_path, n=1)
    bad = tmp_path / 'nothing'
    if case == 'empty_folder':
        bad.mkdir()
    with pytest.raises((ValueError, FileNotFoundError), match='nothing'):
        _dataset(gt, bad)


def test_lmdb_key_absent_names_key_and_database(tmp_path):
    from basicsr.utils.lmdb_util import make_lmdb_from_imgs

    gt, lq = _pair_dirs(tmp_path, n=2)
    for folder in (gt, lq):
        make_lmdb_from_imgs(str(folder), f'{folder}.lmdb', ['0.png', '1.png'], ['0', '1'])
    # a meta_info.txt that names a key the database does not hold
    with open(f'{lq}.lmdb/meta_info.txt', 'a') as f:
        f.write('2.png (24,32,3) 1\n')
    with open(f'{gt}.lmdb/meta_info.txt', 'a') as f:
        f.write('2.png (24,32,3) 1\n')
    ds = MultiDegradationPairedDataset({
        'name': 'l', 'type': 'MultiDegradationPairedDataset', 'phase': 'test', 'io_backend': {'type': 'lmdb'},
        'sources': [{'label': 'rain', 'dataroot_gt': f'{gt}.lmdb', 'dataroot_lq': f'{lq}.lmdb'}]})
    assert len(ds) == 3
    ds[0]
    with pytest.raises(KeyError, match=r"'2'.*lmdb"):
        ds[2]


def test_unknown_label_names_it(tmp_path):
    gt, lq = _pair_dirs(tmp_path, n=1)
    with pytest.raises(ValueError, match='fog'):
        MultiDegradationPairedDataset({
            'name': 'u', 'type': 'MultiDegradationPairedDataset', 'phase': 'test', 'labels': ['rain', 'haze'],
            'sources': [{'label': 'fog', 'dataroot_gt': str(gt), 'dataroot_lq': str(lq)}]})


# ---------------------------------------------------------------------------------------------------- option files
def _train_opt(tmp_path):
    gt, lq = _pair_dirs(tmp_path / 'data', n=2)
    dataset = {'name': 'd', 'type': 'MultiDegradationPairedDataset',
               'sources': [{'label': 'rain', 'dataroot_gt': str(gt), 'dataroot_lq': str(lq)}]}
    return {
        'name': 'corpus', 'model_type': 'UnfoldingRestorationModel', 'num_gpu': 0, 'manual_seed': 0,
        'datasets': {'train': {**dataset, 'gt_size': 16, 'batch_size_per_gpu': 1, 'num_worker_per_gpu': 0},
                     'val': dict(dataset)},
        'network_g': dict(TINY_DGUNET),
        'path': {'pretrain_network_g': None, 'strict_load_g': True, 'resume_state': None},
        'train': {'optim_g': {'type': 'Adam', 'lr': 1e-4}, 'scheduler': {'type': 'MultiStepLR', 'milestones': [9],
                  'gamma': 0.5}, 'total_iter': 2, 'warmup_iter': -1,
                  'pixel_opt': {'type': 'CharbonnierLoss', 'loss_weight': 1.0, 'eps': 1e-6}},
        'val': {'val_freq': 2, 'save_img': False, 'metrics': {'psnr': {'type': 'calculate_psnr', 'crop_border': 0}}},
        'logger': {'print_freq': 1, 'save_checkpoint_freq': 2, 'use_tb_logger': False},
    }


def _set(opt, dotted, value):
    *parents, last = dotted.split('.')
    for key in parents:
        opt = opt[key]
    if value is _DELETE:
        del opt[last]
    else:
        opt[last] = value


_DELETE = object()
#: (case id, dotted key, new value, text the error must contain)
OPTION_CASES = [
    ('unknown_top_level_key', 'nmae', 'typo', 'nmae'),
    ('unknown_network_key', 'network_g.n_feats', 8, 'n_feats'),
    ('unknown_arch', 'network_g.type', 'DGUNett', 'DGUNett'),
    ('unknown_model_type', 'model_type', 'UnfoldingModel', 'UnfoldingModel'),
    ('unknown_dataset_type', 'datasets.train.type', 'MultiDegradationDataset', 'MultiDegradationDataset'),
    ('wrong_type_total_iter', 'train.total_iter', 'ten', 'total_iter'),
    ('negative_gt_size', 'datasets.train.gt_size', -16, 'gt_size'),
    ('negative_batch_size', 'datasets.train.batch_size_per_gpu', -1, 'batch_size_per_gpu'),
    ('wrong_type_num_gpu', 'num_gpu', 'two', 'num_gpu'),
    ('bad_phase_name', 'datasets.training', {'type': 'MultiDegradationPairedDataset'}, 'training'),
    ('missing_network_g', 'network_g', _DELETE, 'network_g'),
]


@pytest.mark.parametrize('case,key,value,culprit', OPTION_CASES, ids=[c[0] for c in OPTION_CASES])
def test_option_file_errors_name_file_and_key(tmp_path, case, key, value, culprit):
    opt = _train_opt(tmp_path)
    _set(opt, key, value)
    path = write_yaml(tmp_path / f'{case}.yml', opt)
    with pytest.raises(ValueError, match=culprit) as err:
        check_option_file(path, is_train=True)
    assert f'{case}.yml' in str(err.value)


def test_option_file_yaml_syntax_error_names_line(tmp_path):
    path = tmp_path / 'broken.yml'
    path.write_text('name: x\nnetwork_g:\n  type: DGUNet\n   n_feat: 8\n')
    with pytest.raises(ValueError, match=r'broken\.yml.*line 4'):
        check_option_file(str(path), is_train=True)


#: errors found past the option-file check, where the knowledge lives (dataset, model class).
DEEP_OPTION_CASES = [
    ('missing_data_root', 'datasets.train.sources', [{'label': 'rain', 'dataroot_gt': '/no/such/gt',
                                                     'dataroot_lq': '/no/such/lq'}], '/no/such'),
    ('unknown_dataset_key', 'datasets.train.gt_sise', 16, 'gt_sise'),
    ('unknown_train_key', 'train.stage_weight', [1.0], 'stage_weight'),
    ('unknown_val_key', 'val.tiles', 64, 'tiles'),
    ('bad_stage_weights', 'train.stage_weights', [-1.0, 1.0], 'stage_weights'),
    ('unknown_category', 'datasets.train.cdd11', {'root': '/x', 'categories': ['fog']}, 'fog'),
]


@pytest.mark.parametrize('case,key,value,culprit', DEEP_OPTION_CASES, ids=[c[0] for c in DEEP_OPTION_CASES])
def test_option_errors_found_by_dataset_or_model_name_the_key(tmp_path, case, key, value, culprit):
    from basicsr.data import build_dataset
    from basicsr.models import build_model

    opt = _train_opt(tmp_path)
    if case == 'unknown_category':
        del opt['datasets']['train']['sources']
    _set(opt, key, value)
    check_option_file(write_yaml(tmp_path / f'{case}.yml', opt), is_train=True)  # passes the first check
    opt.update(is_train=True, dist=False, rank=0, world_size=1)
    opt['path'].update(experiments_root=str(tmp_path / 'exp'), models=str(tmp_path / 'exp'),
                       training_states=str(tmp_path / 'exp'), log=str(tmp_path / 'exp'),
                       visualization=str(tmp_path / 'exp'))
    with pytest.raises((ValueError, KeyError, FileNotFoundError), match=culprit):
        build_dataset({**opt['datasets']['train'], 'phase': 'train'})
        build_model(opt)


def test_bad_option_file_creates_and_renames_nothing(tmp_path):
    """`interir train` stops before BasicSR creates (or archives) the experiment folder."""
    from interir_plugin.cli import main

    opt = _train_opt(tmp_path)
    os.makedirs(tmp_path / 'experiments' / 'corpus' / 'models')
    (tmp_path / 'experiments' / 'corpus' / 'models' / 'net_g_1.pth').write_bytes(b'precious')
    opt['network_g']['n_feats'] = 8
    path = write_yaml(tmp_path / 'bad.yml', opt)
    before = _digest(tmp_path / 'experiments')
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        with pytest.raises(SystemExit, match='n_feats'):
            main(['train', '-opt', path])
    finally:
        os.chdir(cwd)
    assert sorted(os.listdir(tmp_path / 'experiments')) == ['corpus']
    assert _digest(tmp_path / 'experiments') == before


# ----------------------------------------------------------------------------------------------------- checkpoints
def _model_and_ckpt(tmp_path):
    from basicsr.archs import build_network
    from basicsr.models import build_model

    opt = {'name': 'corpus', 'model_type': 'UnfoldingRestorationModel', 'num_gpu': 0, 'is_train': False,
           'dist': False, 'scale': 1, 'network_g': TINY_DGUNET, 'path': {'pretrain_network_g': None},
           'val': {'metrics': None}}
    model = build_model(opt)
    path = tmp_path / 'net_g.pth'
    torch.save({'params': build_network(dict(TINY_DGUNET)).state_dict()}, path)
    return model, path


def _load(model, path, param_key='params'):
    model.load_network(model.net_g, str(path), strict=True, param_key=param_key)


@pytest.mark.parametrize('how', ['truncated', 'zero_byte', 'not_an_image'])
def test_checkpoint_damaged_names_the_file(tmp_path, how):
    model, path = _model_and_ckpt(tmp_path)
    _corrupt(path, how)
    before = _digest(tmp_path)
    with pytest.raises(RuntimeError, match='net_g.pth'):
        _load(model, path)
    assert _digest(tmp_path) == before


def test_checkpoint_of_another_architecture_names_keys(tmp_path):
    from basicsr.archs import build_network

    model, path = _model_and_ckpt(tmp_path)
    other = build_network({'type': 'InterIR', 'num_feat': 8, 'num_stages': 1, 'num_experts': 2})
    torch.save({'params': other.state_dict()}, path)
    with pytest.raises(RuntimeError, match=r'(?s)net_g\.pth.*missing keys.*unexpected keys'):
        _load(model, path)


def test_checkpoint_with_wrong_shapes_names_the_key(tmp_path):
    from basicsr.archs import build_network

    model, path = _model_and_ckpt(tmp_path)
    wider = build_network({**TINY_DGUNET, 'n_feat': 12})
    torch.save({'params': wider.state_dict()}, path)
    with pytest.raises(RuntimeError, match=r'shape mismatches.*\(12'):
        _load(model, path)


def test_checkpoint_that_would_run_code_is_refused(tmp_path):
    model, path = _model_and_ckpt(tmp_path)
    marker = tmp_path / 'pwned'

    class Payload:
        def __reduce__(self):
            return (open, (str(marker), 'w'))

    torch.save({'params': Payload()}, path)
    with pytest.raises(RuntimeError, match=r'(?s)net_g\.pth.*(refused|weights_only|Unsupported)'):
        _load(model, path)
    assert not marker.exists()


def test_checkpoint_without_the_param_key_lists_what_it_has(tmp_path):
    model, path = _model_and_ckpt(tmp_path)
    state = torch.load(path, weights_only=True)
    torch.save({'weights': state['params']}, path)
    with pytest.raises(KeyError, match=r"(?s)'params'.*'weights'"):
        _load(model, path)


def test_checkpoint_that_is_not_a_state_dict_names_the_file(tmp_path):
    model, path = _model_and_ckpt(tmp_path)
    torch.save({'params': [torch.zeros(1)]}, path)
    with pytest.raises(ValueError, match='net_g.pth'):
        _load(model, path)


def test_official_dgunet_checkpoint_layout_loads_through_param_key_state_dict(tmp_path):
    """Not a bad input: the official layout ({'state_dict': {'module.' + key}}) is accepted as documented."""
    from basicsr.archs import build_network

    model, path = _model_and_ckpt(tmp_path)
    net = build_network(dict(TINY_DGUNET))
    torch.save({'epoch': 1, 'state_dict': {f'module.{k}': v for k, v in net.state_dict().items()}}, path)
    _load(model, path, param_key='state_dict')
    for key, value in model.net_g.state_dict().items():
        assert torch.equal(value, net.state_dict()[key]), key


def test_corpus_is_at_least_thirty_cases():
    import sys

    module = sys.modules[__name__]
    count = 0
    for name in dir(module):
        fn = getattr(module, name)
        if not name.startswith('test_') or name in ('test_corpus_is_at_least_thirty_cases',
                                                      'test_official_dgunet_checkpoint_layout_loads_through_param_key_'
                                                      'state_dict'):
            continue
        marks = [m for m in getattr(fn, 'pytestmark', []) if m.name == 'parametrize']
        count += len(marks[0].args[1]) if marks else 1
    assert count >= 30, count
