"""Shared fixtures. Tests run on CPU with real photos from scikit-image's bundled sample data."""
import os

import numpy as np
import pytest
import torch

import interir_plugin  # noqa: F401  (shims before any test module imports basicsr, as a user's script would)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED = os.path.join(os.path.dirname(REPO), 'shared')

#: colour photos bundled with scikit-image (no download needed).
PHOTO_NAMES = ('astronaut', 'chelsea', 'coffee', 'rocket', 'immunohistochemistry', 'motorcycle_left')


def load_photo(name):
    """An RGB uint8 photo from scikit-image's bundled data (``motorcycle_left``: left view of the stereo pair)."""
    import skimage.data

    if name == 'motorcycle_left':
        return np.ascontiguousarray(skimage.data.stereo_motorcycle()[0])
    return np.ascontiguousarray(getattr(skimage.data, name)())


def photo_crop(name='astronaut', size=(64, 64), top=0, left=0):
    """A ``size`` crop of a bundled photo as RGB uint8."""
    img = load_photo(name)
    return img[top:top + size[0], left:left + size[1]].copy()


@pytest.fixture(autouse=True)
def _cpu_determinism():
    torch.manual_seed(0)
    # `make test` runs two pytest-xdist workers on the 2-core reference machine: one thread each
    torch.set_num_threads(1 if os.environ.get('PYTEST_XDIST_WORKER') else 2)
    yield


@pytest.fixture
def shared_dir():
    """``../shared`` beside the repository; tests that need its reference data skip without it."""
    if not os.path.isdir(SHARED):
        pytest.skip(f'reference data folder {SHARED} is absent (it ships beside the repository in CI)')
    return SHARED


def write_paired_folders(root, n=4, size=(64, 64), sigma=0.08, seed=0):
    """Write ``n`` GT/LQ PNG pairs (LQ = GT + Gaussian noise) cut from bundled photos into ``root/{gt,lq}``.

    Returns:
        tuple[str, str]: The GT and LQ folders.
    """
    import cv2

    rng = np.random.default_rng(seed)
    gt_dir, lq_dir = os.path.join(root, 'gt'), os.path.join(root, 'lq')
    os.makedirs(gt_dir, exist_ok=True)
    os.makedirs(lq_dir, exist_ok=True)
    for i in range(n):
        gt = photo_crop(PHOTO_NAMES[i % len(PHOTO_NAMES)], size, top=16 * i, left=24 * i)
        lq = np.clip(gt / 255.0 + rng.normal(0, sigma, gt.shape), 0, 1)
        cv2.imwrite(os.path.join(gt_dir, f'{i:03d}.png'), cv2.cvtColor(gt, cv2.COLOR_RGB2BGR))
        cv2.imwrite(os.path.join(lq_dir, f'{i:03d}.png'), cv2.cvtColor((lq * 255).round().astype(np.uint8),
                                                                       cv2.COLOR_RGB2BGR))
    return gt_dir, lq_dir


def paired_train_options(name, gt_dir, lq_dir, network_g, model_type='SRModel', total_iter=4, save_freq=2,
                         val_freq=None, gt_size=32, batch_size=2, extra_train=None):
    """A minimal BasicSR training option dict on PNG pairs (PairedImageDataset for train and val, CPU)."""
    train = {
        'optim_g': {'type': 'Adam', 'lr': 1e-4, 'betas': [0.9, 0.99]},
        'scheduler': {'type': 'MultiStepLR', 'milestones': [1000], 'gamma': 0.5},
        'total_iter': total_iter, 'warmup_iter': -1,
        'pixel_opt': {'type': 'L1Loss', 'loss_weight': 1.0, 'reduction': 'mean'},
    }
    train.update(extra_train or {})
    return {
        'name': name, 'model_type': model_type, 'scale': 1, 'num_gpu': 0, 'manual_seed': 0,
        'datasets': {
            'train': {'name': 'pairs', 'type': 'PairedImageDataset', 'dataroot_gt': gt_dir, 'dataroot_lq': lq_dir,
                      'io_backend': {'type': 'disk'}, 'gt_size': gt_size, 'use_hflip': True, 'use_rot': True,
                      'num_worker_per_gpu': 0, 'batch_size_per_gpu': batch_size, 'dataset_enlarge_ratio': 1,
                      'prefetch_mode': None, 'filename_tmpl': '{}'},
            'val': {'name': 'pairs_val', 'type': 'PairedImageDataset', 'dataroot_gt': gt_dir, 'dataroot_lq': lq_dir,
                    'io_backend': {'type': 'disk'}, 'filename_tmpl': '{}'},
        },
        'network_g': network_g,
        'path': {'pretrain_network_g': None, 'strict_load_g': True, 'resume_state': None},
        'train': train,
        'val': {'val_freq': val_freq or save_freq, 'save_img': False,
                'metrics': {'psnr': {'type': 'calculate_psnr', 'crop_border': 0, 'test_y_channel': False}}},
        'logger': {'print_freq': 1, 'save_checkpoint_freq': save_freq, 'use_tb_logger': False,
                   'wandb': {'project': None, 'resume_id': None}},
        'dist_params': {'backend': 'gloo', 'port': 29500},
    }


@pytest.fixture
def one_thread():
    """Tiny networks on tiny images: one thread is as fast, and immune to OpenMP spin-waits on a loaded machine."""
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(2)


def write_tiny_cdd(root, labels=('low', 'haze'), n=2, size=(32, 40)):
    """A CDD-11-layout test split with real photo crops under ``root``; LQ = darkened (low) or hazed GT."""
    import cv2

    for label in ('clear', *labels):
        os.makedirs(os.path.join(root, label), exist_ok=True)
    for i in range(n):
        gt = photo_crop(('astronaut', 'coffee')[i % 2], size, 40 * i, 30 * i)[:, :, ::-1]
        assert cv2.imwrite(os.path.join(root, 'clear', f'{i}.png'), gt)
        for label in labels:
            lq = gt * 0.4 if label == 'low' else gt * 0.6 + 0.4 * 220
            assert cv2.imwrite(os.path.join(root, label, f'{i}.png'), np.round(lq).astype(np.uint8))
    return root


def write_yaml(path, opt):
    import yaml

    with open(path, 'w') as f:
        yaml.safe_dump(opt, f, sort_keys=False)
    return str(path)
