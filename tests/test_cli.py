"""The `interir` command: subcommands listed, and a real train -> test round trip through BasicSR's pipelines."""
import glob
import os
import re
import subprocess
import sys

import torch

from conftest import paired_train_options, write_paired_folders, write_yaml
from interir_plugin.cli import build_parser

SMALL_DGUNET = {'type': 'DGUNet', 'n_feat': 8, 'scale_unetfeats': 4, 'scale_orsnetfeats': 4, 'depth': 1}


def _run(args, cwd):
    return subprocess.run([sys.executable, '-m', 'interir_plugin', *args], cwd=cwd, capture_output=True, text=True,
                          timeout=300)


def test_parser_lists_train_and_test_with_their_options():
    parser = build_parser()
    args = parser.parse_args(['train', '-opt', 'x.yml', '--auto_resume', '--launcher', 'pytorch', '--debug'])
    assert (args.opt, args.auto_resume, args.launcher, args.debug) == ('x.yml', True, 'pytorch', True)
    assert parser.parse_args(['test', '-opt', 'y.yml']).command == 'test'


def test_module_entry_point_and_missing_option_file(tmp_path):
    out = subprocess.run([sys.executable, '-m', 'interir_plugin.train', '--help'], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0 and '--auto_resume' in out.stdout
    missing = _run(['train', '-opt', 'nope.yml'], tmp_path)
    assert missing.returncode != 0 and 'nope.yml' in missing.stderr


def test_train_five_iterations_then_test_the_saved_weights(tmp_path):
    gt, lq = write_paired_folders(str(tmp_path / 'data'), n=4, size=(40, 44))  # 44 wide: not a multiple of 8
    opt = paired_train_options('tiny_dgunet', gt, lq, SMALL_DGUNET, model_type='UnfoldingRestorationModel',
                               total_iter=5, save_freq=5, gt_size=32,
                               extra_train={'pixel_opt': {'type': 'CharbonnierLoss', 'loss_weight': 1.0,
                                                          'eps': 1e-6}})
    train = _run(['train', '-opt', write_yaml(tmp_path / 'train.yml', opt)], tmp_path)
    assert train.returncode == 0, train.stderr[-4000:]
    exp = tmp_path / 'experiments' / 'tiny_dgunet'
    assert sorted(os.listdir(exp / 'models')) == ['net_g_5.pth', 'net_g_latest.pth']
    assert os.listdir(exp / 'training_states') == ['5.state']
    log = open(glob.glob(str(exp / 'train_tiny_dgunet_*.log'))[0]).read()
    psnr = re.search(r'# psnr: ([0-9.]+)', log)
    assert psnr and 5 < float(psnr.group(1)) < 60, log[-2000:]
    assert torch.load(exp / 'models' / 'net_g_latest.pth', weights_only=True)['params']

    test_opt = {k: opt[k] for k in ('model_type', 'scale', 'num_gpu', 'manual_seed', 'network_g')}
    test_opt.update(name='tiny_dgunet_test', val={**opt['val'], 'save_img': True},
                    datasets={'test_1': opt['datasets']['val']},
                    path={'pretrain_network_g': str(exp / 'models' / 'net_g_latest.pth'), 'strict_load_g': True})
    test = _run(['test', '-opt', write_yaml(tmp_path / 'test.yml', test_opt)], tmp_path)
    assert test.returncode == 0, test.stderr[-4000:]
    results = tmp_path / 'results' / 'tiny_dgunet_test'
    images = glob.glob(str(results / 'visualization' / '**' / '*.png'), recursive=True)
    assert len(images) == 4
    import cv2

    assert cv2.imread(images[0]).shape == (40, 44, 3)  # padded for the net, cropped back
    test_log = open(glob.glob(str(results / 'test_tiny_dgunet_test_*.log'))[0]).read()
    assert re.search(r'# psnr: ([0-9.]+)', test_log)
