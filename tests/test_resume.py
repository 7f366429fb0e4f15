"""Kill-and-resume of the plugin's UnfoldingRestorationModel (a tiny InterIR): a run killed with SIGKILL at random
moments resumes with --auto_resume from its newest complete state, ends in a valid final state, and ends with the
same weights as an uninterrupted run with the same seed (exactly: on the CPU with the same threads the arithmetic is
deterministic, so equal batches, random crops/flips and states give bit-equal weights); an interrupted run
continues where it stopped, equal to an uninterrupted one as well."""
import os
import random
import re
import signal
import subprocess
import sys
import time

import torch

from conftest import paired_train_options, write_paired_folders, write_yaml

#: a tiny InterIR: every part of the algorithm, one stage plus the final step, one expert.
NET = {'type': 'InterIR', 'num_feat': 8, 'unshuffle': 2, 'num_stages': 1, 'num_experts': 1, 'expand': 1,
       'recognise': False}  # unlabelled pairs: no presence labels to learn the gates from
#: an EMA copy too, so its resume (from ``params_ema``) is checked with the weights.
EXTRA_TRAIN = {'ema_decay': 0.9}
#: one thread in every child: the same arithmetic in every run, so equal inputs give bit-equal weights.
ENV = {**os.environ, 'OMP_NUM_THREADS': '1'}


def _options(name, gt, lq, total_iter, save_freq):
    # 4 pairs in batches of 2: 2 iterations per epoch, so saves land inside epochs and at their ends
    return paired_train_options(name, gt, lq, NET, model_type='UnfoldingRestorationModel', total_iter=total_iter,
                                save_freq=save_freq, val_freq=1000, batch_size=2, extra_train=EXTRA_TRAIN)


def _train_cmd(opt_path):
    return [sys.executable, '-m', 'interir_plugin.train', '-opt', opt_path, '--auto_resume']


def _train(opt_path, cwd):
    run = subprocess.run(_train_cmd(opt_path), cwd=cwd, env=ENV, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]


def _states(exp):
    folder = os.path.join(exp, 'training_states')
    return sorted(int(f[:-6]) for f in os.listdir(folder) if f.endswith('.state')) if os.path.isdir(folder) else []


def _load(path):
    return torch.load(path, map_location='cpu', weights_only=True)


def _loadable(path):
    try:
        _load(path)
    except Exception:
        return False
    return True


def _complete_states(exp):
    return [it for it in _states(exp) if _loadable(os.path.join(exp, 'training_states', f'{it}.state'))]


def _assert_same_weights(exp, reference, name='net_g_latest.pth'):
    ours, theirs = _load(os.path.join(exp, 'models', name)), _load(os.path.join(reference, 'models', name))
    assert set(ours) == set(theirs) == {'params', 'params_ema'}
    for key in ours:
        assert ours[key].keys() == theirs[key].keys()
        differ = [k for k in ours[key] if not torch.equal(ours[key][k], theirs[key][k])]
        assert not differ, f'{key}: {len(differ)} tensors differ from the uninterrupted run, e.g. {differ[:3]}'


def _logs(exp):
    return ''.join(open(os.path.join(exp, f)).read() for f in sorted(os.listdir(exp)) if f.endswith('.log'))


def test_random_sigkills_then_resume_end_in_a_valid_final_state_equal_to_an_uninterrupted_run(tmp_path):
    gt, lq = write_paired_folders(str(tmp_path / 'data'), n=4, size=(48, 48))
    total = 30
    opt_path = write_yaml(tmp_path / 'killme.yml', _options('killme', gt, lq, total, save_freq=3))
    _train(write_yaml(tmp_path / 'reference.yml', _options('reference', gt, lq, total, save_freq=3)), tmp_path)
    exp = os.path.join(tmp_path, 'experiments', 'killme')
    rng = random.Random(1234)
    kills, resumed_from = 0, []
    for _ in range(4):
        before = _complete_states(exp)
        proc = subprocess.Popen(_train_cmd(opt_path), cwd=tmp_path, env=ENV, stdout=subprocess.DEVNULL,
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
    _train(opt_path, tmp_path)
    logs = _logs(exp)
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
    _assert_same_weights(exp, os.path.join(tmp_path, 'experiments', 'reference'))


def test_interrupted_run_continues_from_its_last_saved_state(tmp_path):
    gt, lq = write_paired_folders(str(tmp_path / 'data'), n=4, size=(48, 48))
    opt = _options('cont', gt, lq, total_iter=3, save_freq=3)  # stops inside the second epoch
    opt_path = write_yaml(tmp_path / 'cont.yml', opt)
    _train(opt_path, tmp_path)
    opt['train']['total_iter'] = 6
    write_yaml(tmp_path / 'cont.yml', opt)
    _train(opt_path, tmp_path)
    exp = os.path.join(tmp_path, 'experiments', 'cont')
    logs = _logs(exp)
    assert 'Resuming training from epoch: ' in logs and 'iter: 3.' in logs
    assert 'resume: epoch 1 continues after its first 1 batches' in logs
    assert _states(exp) == [3, 6]
    _train(write_yaml(tmp_path / 'whole.yml', _options('whole', gt, lq, total_iter=6, save_freq=3)), tmp_path)
    _assert_same_weights(exp, os.path.join(tmp_path, 'experiments', 'whole'))
