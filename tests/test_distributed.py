"""Multi-process training through torchrun with gloo on CPU (the compat layer's CPU distributed shims)."""
import os
import subprocess
import sys

import torch

from conftest import paired_train_options, write_paired_folders, write_yaml


def _free_port():
    import socket

    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        return sock.getsockname()[1]


def test_two_process_gloo_training_saves_once_with_equal_weights(tmp_path):
    gt, lq = write_paired_folders(str(tmp_path / 'data'), n=4, size=(48, 48))
    net = {'type': 'SRVGGNetCompact', 'num_in_ch': 3, 'num_out_ch': 3, 'num_feat': 8, 'num_conv': 2, 'upscale': 1}
    opt = paired_train_options('ddp_cpu', gt, lq, net, total_iter=3, save_freq=3, val_freq=100, batch_size=1)
    opt_path = write_yaml(tmp_path / 'ddp.yml', opt)
    env = {**os.environ, 'DDP_PROBE_OUT': str(tmp_path), 'OMP_NUM_THREADS': '1',
           'PYTHONPATH': os.path.dirname(os.path.abspath(__file__))}
    cmd = [sys.executable, '-m', 'torch.distributed.run', '--nproc_per_node=2', f'--master_port={_free_port()}',
           os.path.join(os.path.dirname(os.path.abspath(__file__)), 'ddp_probe.py'), '-opt', opt_path,
           '--launcher', 'pytorch']
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    models = sorted(os.listdir(tmp_path / 'experiments' / 'ddp_cpu' / 'models'))
    assert models == ['net_g_3.pth', 'net_g_latest.pth']
    logs = [f for f in os.listdir(tmp_path / 'experiments' / 'ddp_cpu') if f.endswith('.log')]
    assert len(logs) == 1  # rank 0 alone writes the log
    log = open(tmp_path / 'experiments' / 'ddp_cpu' / logs[0]).read()
    assert 'dist: True' in log and 'world_size: 2' in log
    assert 'iter:       3,' in log  # every step ran (BasicSR logs 'iter:{:8,d}')
    # BasicSR seeds each rank differently (seed + rank), so equal weights mean DDP synchronised them.
    r0 = torch.load(tmp_path / 'rank0.pth', weights_only=True)
    r1 = torch.load(tmp_path / 'rank1.pth', weights_only=True)
    saved = torch.load(tmp_path / 'experiments/ddp_cpu/models/net_g_latest.pth', weights_only=True)['params']
    assert r0.keys() == r1.keys() == saved.keys()
    for key in r0:
        assert torch.equal(r0[key], r1[key]), key
        assert torch.equal(r0[key], saved[key]), key
