"""Multi-process training of UnfoldingRestorationModel (a tiny InterIR) through torchrun with gloo on CPU (the compat
layer's CPU distributed shims): the ranks stay in step, rank 0 alone writes atomic checkpoints, a non-finite loss on
one rank makes every rank skip the step, and a resumed two-process run ends equal to an uninterrupted one."""
import os
import subprocess
import sys

import torch

from conftest import paired_train_options, write_paired_folders, write_yaml

NET = {'type': 'InterIR', 'num_feat': 8, 'unshuffle': 2, 'num_stages': 1, 'num_experts': 1, 'expand': 1,
       'recognise': False}  # unlabelled pairs: no presence labels to learn the gates from
HERE = os.path.dirname(os.path.abspath(__file__))


def _free_port():
    import socket

    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        return sock.getsockname()[1]


def _torchrun(tmp_path, opt_path, out, nan_at=None, resume=False):
    # the checkout under test before any installed copy (an editable install may point at another checkout)
    env = {**os.environ, 'DDP_PROBE_OUT': str(out), 'OMP_NUM_THREADS': '1',
           'PYTHONPATH': os.pathsep.join([HERE, os.path.dirname(HERE)])}
    if nan_at is not None:
        env['DDP_PROBE_NAN_AT'] = str(nan_at)
    cmd = [sys.executable, '-m', 'torch.distributed.run', '--nproc_per_node=2', f'--master_port={_free_port()}',
           os.path.join(HERE, 'ddp_probe.py'), '-opt', opt_path, '--launcher', 'pytorch'] + (
        ['--auto_resume'] if resume else [])
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]


def _options(name, gt, lq, total_iter, save_freq):
    return paired_train_options(name, gt, lq, NET, model_type='UnfoldingRestorationModel', total_iter=total_iter,
                                save_freq=save_freq, val_freq=100, batch_size=1)


def _log(exp):
    return ''.join(open(os.path.join(exp, f)).read() for f in sorted(os.listdir(exp)) if f.endswith('.log'))


def _assert_equal_states(*states):
    for state in states[1:]:
        assert state.keys() == states[0].keys()
        for key in state:
            assert torch.equal(state[key], states[0][key]), key


def test_two_process_gloo_training_saves_once_with_equal_weights_and_skips_nonfinite_steps_together(tmp_path):
    gt, lq = write_paired_folders(str(tmp_path / 'data'), n=4, size=(48, 48))
    opt_path = write_yaml(tmp_path / 'ddp.yml', _options('ddp_cpu', gt, lq, total_iter=3, save_freq=3))
    _torchrun(tmp_path, opt_path, tmp_path, nan_at=2)  # rank 1 alone sees a NaN in its second batch
    exp = tmp_path / 'experiments' / 'ddp_cpu'
    models = sorted(os.listdir(exp / 'models'))
    assert models == ['net_g_3.pth', 'net_g_latest.pth']
    assert not [f for f in os.listdir(exp / 'training_states') if f.endswith('.tmp')]  # atomic writes, no leftovers
    logs = [f for f in os.listdir(exp) if f.endswith('.log')]
    assert len(logs) == 1  # rank 0 alone writes the log
    log = _log(exp)
    assert 'dist: True' in log and 'world_size: 2' in log
    assert 'iter:       3,' in log  # every step ran (BasicSR logs 'iter:{:8,d}')
    # rank 0's own loss was finite: it skipped because rank 1's was not (the ranks agree)
    assert 'iter 2: non-finite loss' in log and 'step skipped (1 in a row, 1 in total)' in log
    state = torch.load(exp / 'training_states' / '3.state', weights_only=True)
    assert len(state['rng']) == 2  # the random generators of both ranks
    # BasicSR seeds each rank differently (seed + rank), so equal weights mean DDP synchronised them.
    r0 = torch.load(tmp_path / 'rank0.pth', weights_only=True)
    r1 = torch.load(tmp_path / 'rank1.pth', weights_only=True)
    saved = torch.load(exp / 'models' / 'net_g_latest.pth', weights_only=True)['params']
    _assert_equal_states(r0, r1, saved)


def test_two_process_resume_equals_an_uninterrupted_run(tmp_path):
    gt, lq = write_paired_folders(str(tmp_path / 'data'), n=4, size=(48, 48))
    opt = _options('ddp_resume', gt, lq, total_iter=1, save_freq=1)  # 2 iterations per epoch: stop inside one
    opt_path = write_yaml(tmp_path / 'resume.yml', opt)
    _torchrun(tmp_path, opt_path, tmp_path)
    opt['train']['total_iter'] = 3
    write_yaml(tmp_path / 'resume.yml', opt)
    _torchrun(tmp_path, opt_path, tmp_path, resume=True)
    assert 'resume: epoch 0 continues after its first 1 batches' in _log(tmp_path / 'experiments' / 'ddp_resume')
    whole = tmp_path / 'whole'
    whole.mkdir()
    _torchrun(whole, write_yaml(whole / 'whole.yml', _options('ddp_whole', gt, lq, total_iter=3, save_freq=1)),
              whole)
    _assert_equal_states(torch.load(tmp_path / 'rank0.pth', weights_only=True),
                         torch.load(tmp_path / 'rank1.pth', weights_only=True),
                         torch.load(whole / 'rank0.pth', weights_only=True))
