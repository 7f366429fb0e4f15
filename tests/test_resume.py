"""Kill-and-resume: a run killed with SIGKILL at random moments resumes with --auto_resume from its newest complete
state and ends in a valid final state; an interrupted run continues where it stopped."""
import os
import random
import re
import signal
import subprocess
import sys
import time

import torch

from conftest import paired_train_options, write_paired_folders, write_yaml

NET = {'type': 'SRVGGNetCompact', 'num_in_ch': 3, 'num_out_ch': 3, 'num_feat': 32, 'num_conv': 4, 'upscale': 1}


def _train_cmd(opt_path):
    return [sys.executable, '-m', 'interir_plugin.train', '-opt', opt_path, '--auto_resume']


def _states(exp):
    folder = os.path.join(exp, 'training_states')
    return sorted(int(f[:-6]) for f in os.listdir(folder) if f.endswith('.state')) if os.path.isdir(folder) else []


def _loadable(path):
    try:
        torch.load(path, map_location='cpu', weights_only=True)
    except Exception:
        return False
    return True


def _complete_states(exp):
    return [it for it in _states(exp) if _loadable(os.path.join(exp, 'training_states', f'{it}.state'))]


def test_random_sigkills_then_resume_end_in_a_valid_final_state(tmp_path):
    gt, lq = write_paired_folders(str(tmp_path / 'data'), n=4, size=(48, 48))
    total = 60
    opt = paired_train_options('killme', gt, lq, NET, total_iter=total, save_freq=3, val_freq=1000, batch_size=2)
    opt_path = write_yaml(tmp_path / 'killme.yml', opt)
    exp = os.path.join(tmp_path, 'experiments', 'killme')
    env = {**os.environ, 'OMP_NUM_THREADS': '1'}
    rng = random.Random(1234)
    kills, resumed_from = 0, []
    for _ in range(4):
        before = _complete_states(exp)
        proc = subprocess.Popen(_train_cmd(opt_path), cwd=tmp_path, env=env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, text=True)
        deadline = time.time() + 120
        while time.time() < deadline and proc.poll() is None:  # wait until this run has saved something new
            if len(_states(exp)) > len(before):
                break
            time.sleep(0.02)
        time.sleep(rng.uniform(0.0, 0.4))  # then a random moment, often inside a save
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            kills += 1
        proc.wait(timeout=30)
        complete = _complete_states(exp)
        assert complete, 'a kill must never leave the run without a complete state'
        resumed_from.append(max(complete))
    assert kills >= 3
    final = subprocess.run(_train_cmd(opt_path), cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert final.returncode == 0, final.stderr[-3000:]
    logs = ''.join(open(os.path.join(exp, f)).read() for f in sorted(os.listdir(exp)) if f.endswith('.log'))
    resumes = [int(m) for m in re.findall(r'Resuming training from epoch: \d+, iter: (\d+)', logs)]
    assert resumes[-1] == resumed_from[-1]  # the last resume started at the newest complete state: nothing lost
    assert set(resumed_from) <= set(resumes)
    assert 'End of training' in logs
    assert max(_complete_states(exp)) == total
    for folder in ('models', 'training_states'):
        for name in os.listdir(os.path.join(exp, folder)):
            path = os.path.join(exp, folder, name)
            if name.endswith(('.pth', '.state')) and int(re.sub(r'\D', '', name) or total) == total:
                assert _loadable(path), path  # the final files are complete


def test_interrupted_run_continues_from_its_last_saved_state(tmp_path):
    gt, lq = write_paired_folders(str(tmp_path / 'data'), n=4, size=(48, 48))
    opt = paired_train_options('cont', gt, lq, NET, total_iter=4, save_freq=2, val_freq=1000, batch_size=2)
    opt_path = write_yaml(tmp_path / 'cont.yml', opt)
    first = subprocess.run(_train_cmd(opt_path), cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert first.returncode == 0, first.stderr[-3000:]
    opt['train']['total_iter'] = 6
    write_yaml(tmp_path / 'cont.yml', opt)
    second = subprocess.run(_train_cmd(opt_path), cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert second.returncode == 0, second.stderr[-3000:]
    exp = os.path.join(tmp_path, 'experiments', 'cont')
    logs = ''.join(open(os.path.join(exp, f)).read() for f in sorted(os.listdir(exp)) if f.endswith('.log'))
    assert 'Resuming training from epoch: ' in logs and 'iter: 4.' in logs
    assert _states(exp) == [2, 4, 6]
