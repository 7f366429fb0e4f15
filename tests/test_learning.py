"""InterIR-S learns: a short CPU training through ``interir train`` with the shipped MiniCDD recipe beats the degraded
input on the MiniCDD test split by a measured margin, and its final stage beats its first.

Iteration-based (not the recipe's time budget) so the outcome does not depend on how busy the machine is; one thread.
Measured (2026-11-29, this file as committed, 600 iterations, about 60 s of training on one core): mean PSNR over
labels input 12.23 dB, first output 13.77, final 14.64, i.e. +2.41 dB over the input and +0.87 dB from the first
to the final output. The test asks for MARGIN = 2.0 dB over the input (the issue's floor) and for the final
output to beat the first.
"""
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
import yaml

from interir_plugin.data.degradations import CDD11_CATEGORIES

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RECIPE = os.path.join(REPO, 'options', 'train', 'InterIR', 'train_InterIR-S_MiniCDD.yml')
#: Training steps of the test (about a minute on one free core).
ITERATIONS = 600
#: The final output's mean PSNR over labels must beat the input's by this much (dB).
MARGIN = 2.0


@pytest.fixture(scope='module')
def trained(tmp_path_factory):
    """``(network options, weights)`` of InterIR-S trained ITERATIONS steps by ``interir train`` in a fresh folder."""
    from interir_plugin.data.preparation import make_minicdd

    root = tmp_path_factory.mktemp('learning')
    make_minicdd(str(root / 'datasets' / 'MiniCDD'))
    with open(RECIPE, encoding='utf-8') as f:
        opt = yaml.safe_load(f)
    opt['train'].update(time_budget=None, total_iter=ITERATIONS, warmup_iter=ITERATIONS // 100)
    opt['train']['scheduler']['periods'] = [ITERATIONS]
    opt.update(num_gpu=0, val=None, name='learning')
    opt['datasets'] = {'train': opt['datasets']['train']}
    opt['logger']['save_checkpoint_freq'] = ITERATIONS
    opt_path = root / 'learning.yml'
    with open(opt_path, 'w', encoding='utf-8') as f:
        yaml.safe_dump(opt, f)
    env = {**os.environ, 'OMP_NUM_THREADS': '1', 'OMP_WAIT_POLICY': 'PASSIVE'}
    run = subprocess.run([sys.executable, '-m', 'interir_plugin', 'train', '-opt', str(opt_path)], cwd=root,
                         capture_output=True, text=True, timeout=600, env=env)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-3000:]
    return root, opt['network_g'], root / 'experiments' / 'learning' / 'models' / 'net_g_latest.pth'


def _stage_psnr(root, network_opt, weights):
    """Mean over labels of the per-image PSNR of the input, the first and the final output on the test split."""
    from basicsr.metrics import calculate_psnr
    from basicsr.utils.registry import ARCH_REGISTRY

    from interir_plugin.data.multi_degradation_dataset import MultiDegradationPairedDataset
    from interir_plugin.utils.checkpoint import load_weights
    from interir_plugin.utils.padding import crop_to, pad_for_network

    kwargs = dict(network_opt)
    net = ARCH_REGISTRY.get(kwargs.pop('type'))(**kwargs)
    load_weights(net, str(weights), 'params', True)
    net.eval()
    data = MultiDegradationPairedDataset({'protocol': 'minicdd', 'protocol_root': str(root / 'datasets' / 'MiniCDD'),
                                          'protocol_split': 'test', 'phase': 'val'})
    scores = {label: [] for label in CDD11_CATEGORIES}

    def to255(t):
        return (t[0].clamp(0, 1).permute(1, 2, 0).numpy() * 255).round()

    with torch.no_grad():
        for i in range(len(data)):
            sample = data[i]
            x, size = pad_for_network(sample['lq'][None], net)
            outs = crop_to(list(net(x)), size)
            gt = to255(sample['gt'][None])
            scores[sample['label_name']].append([calculate_psnr(to255(t), gt, 0)
                                                 for t in (sample['lq'][None], outs[0], outs[-1])])
    return np.mean([np.mean(v, 0) for v in scores.values()], 0)  # input, first, final


def test_short_training_beats_the_input_and_the_stages_improve(trained):
    torch.set_num_threads(1)
    root, network_opt, weights = trained
    psnr_in, psnr_first, psnr_final = _stage_psnr(root, network_opt, weights)
    print(f'MiniCDD test, mean over labels: input {psnr_in:.2f} dB, first output {psnr_first:.2f}, '
          f'final {psnr_final:.2f} ({ITERATIONS} iterations)')
    assert psnr_final >= psnr_in + MARGIN, (psnr_in, psnr_first, psnr_final)
    assert psnr_final > psnr_first, (psnr_first, psnr_final)
