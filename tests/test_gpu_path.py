"""The path a GPU user takes (issue 25), checked on the CPU: EMA with the recogniser's running statistics, resume
from a state mapped to a CUDA device, the total batch over processes, the NCCL timeout, fresh training draws, no
host sync before backward, data-loader keys, and ``--device cuda:i`` in the tools. Devices other than the CPU are
simulated (monkeypatched CUDA queries, tensors that report a CUDA device)."""
import os

import pytest
import torch

import interir_plugin  # noqa: F401  (shims and registration before BasicSR is used)
from conftest import PHOTO_NAMES, photo_crop

#: a tiny InterIR with the presence-gated physical head (its recogniser has batch-norm running statistics).
GATED = {'type': 'InterIR', 'num_feat': 8, 'unshuffle': 4, 'num_stages': 1, 'num_experts': 1, 'expand': 1}


def _build_model(opt):
    from basicsr.models import build_model

    return build_model(opt)


def _model_opt(tmp_path, network_g=None, train=None, **top):
    exp = str(tmp_path / 'exp')
    opt = {'name': 'gpu_path', 'model_type': 'UnfoldingRestorationModel', 'num_gpu': 0, 'dist': False, 'rank': 0,
           'world_size': 1, 'is_train': True, 'network_g': dict(network_g or GATED),
           'path': {'pretrain_network_g': None, 'strict_load_g': True, 'resume_state': None, 'log': exp,
                    'models': os.path.join(exp, 'models'), 'training_states': os.path.join(exp, 'training_states'),
                    'visualization': os.path.join(exp, 'visualization')},
           'train': {'ema_decay': 0.999, 'optim_g': {'type': 'Adam', 'lr': 1e-3},
                     'scheduler': {'type': 'MultiStepLR', 'milestones': [1000], 'gamma': 0.5},
                     'total_iter': 10, 'warmup_iter': -1,
                     'pixel_opt': {'type': 'CharbonnierLoss', 'loss_weight': 1.0, 'eps': 1e-6}, **(train or {})}}
    opt.update(top)
    return opt


def _labelled_batch(labels=('low_haze', 'rain', 'snow', 'haze'), size=(32, 40), seed=0):
    gen = torch.Generator().manual_seed(seed)
    gt = torch.stack([torch.from_numpy(photo_crop(PHOTO_NAMES[i], size, 10 * i, 10 * i)).permute(2, 0, 1).float()
                      / 255 for i in range(len(labels))])
    lq = (0.6 * gt + 0.3 + 0.05 * torch.randn(gt.shape, generator=gen)).clamp(0, 1)
    return {'lq': lq, 'gt': gt, 'label_name': list(labels)}


# ------------------------------------------------------------------------------------- 1. EMA and buffers
def _gates(net, x):
    net.eval()
    with torch.no_grad():
        _, aux = net(x, return_aux=True)
    logits = aux['presence_logits']
    return logits, net.head.recogniser.decide(logits)


def test_ema_copies_the_recognisers_running_statistics(tmp_path):
    model = _build_model(_model_opt(tmp_path))
    data = _labelled_batch()
    for it in (1, 2, 3):
        model.feed_data(data)
        model.optimize_parameters(it)
    own = dict(model.net_g.named_buffers())
    assert 'head.recogniser.norm.running_mean' in own
    assert own['head.recogniser.norm.num_batches_tracked'] == 3
    for name, buf in model.net_g_ema.named_buffers():
        assert torch.equal(buf, own[name]), name  # BasicSR's EMA left them at mean 0, var 1, count 0


def test_ema_tested_model_decides_the_same_presence_gates(tmp_path):
    """With an EMA that follows net_g closely (decay 1e-9), the EMA network (what validation, ``params_ema`` and
    ``interir test`` use) gives the recogniser's logits and gates of net_g."""
    model = _build_model(_model_opt(tmp_path, train={'ema_decay': 1e-9}))
    data = _labelled_batch()
    for it in (1, 2, 3):
        model.feed_data(data)
        model.optimize_parameters(it)
    x = _labelled_batch(seed=1)['lq']
    logits, gates = _gates(model.net_g, x)
    ema_logits, ema_gates = _gates(model.net_g_ema, x)
    assert torch.allclose(ema_logits, logits, atol=1e-5)
    assert torch.equal(ema_gates, gates)


# ----------------------------------------------------------------------------- 2. resume from a CUDA-mapped state
class _OnCuda(torch.Tensor):
    """A tensor that reports ``cuda:0`` and refuses host access as a CUDA tensor does (``numpy()`` raises); ``.to``
    and ``.cpu`` give its data as an ordinary CPU tensor. Stands for what BasicSR's resume loader maps to a GPU."""

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func == torch.Tensor.device.__get__:  # a new method-wrapper at every lookup
            return torch.device('cuda', 0)
        if func == torch.Tensor.numpy:
            raise TypeError("can't convert cuda:0 device type tensor to numpy. Use Tensor.cpu() to copy the tensor to "
                            'host memory first.')
        with torch._C.DisableTorchFunctionSubclass():
            out = func(*args, **kwargs)
        return out.as_subclass(torch.Tensor) if isinstance(out, torch.Tensor) else out


def _on_cuda(value):
    """``value`` (nested lists, tuples, dicts) with every tensor wrapped in :class:`_OnCuda`."""
    if isinstance(value, torch.Tensor):
        return value.as_subclass(_OnCuda)
    if isinstance(value, (list, tuple)):
        return type(value)(_on_cuda(v) for v in value)
    if isinstance(value, dict):
        return {k: _on_cuda(v) for k, v in value.items()}
    return value


def _draws():
    import random

    import numpy as np

    return random.random(), float(np.random.rand()), float(torch.rand(1))


def test_rng_states_mapped_to_a_gpu_restore(monkeypatch):
    from interir_plugin.utils.resume import restore_rng_states, rng_states

    torch.manual_seed(3)
    saved = rng_states()
    assert saved['torch'].device.type == 'cpu'
    expected = _draws()
    _draws()  # move every generator on
    mapped = _on_cuda(saved)
    assert mapped['torch'].device.type == 'cuda' and mapped['numpy'][1].device.type == 'cuda'
    restore_rng_states(mapped)  # before the fix: TypeError from numpy(), then a non-CPU tensor for set_rng_state
    assert _draws() == expected


def test_cuda_rng_states_restored_on_the_devices_there_are(monkeypatch):
    from interir_plugin.utils import resume

    restored = {}

    def set_rng_state(state, device):
        assert type(state) is torch.Tensor and state.device.type == 'cpu' and state.dtype == torch.uint8
        restored[device] = state.clone()

    monkeypatch.setattr(torch.cuda, 'is_available', lambda: True)
    monkeypatch.setattr(torch.cuda, 'device_count', lambda: 1)
    monkeypatch.setattr(torch.cuda, 'set_rng_state', set_rng_state)
    monkeypatch.setattr(torch.cuda, 'set_rng_state_all', lambda states: pytest.fail('restores devices it lacks'))
    states = {**resume.rng_states(), 'cuda': [torch.arange(16, dtype=torch.uint8), torch.ones(16, dtype=torch.uint8)]}
    resume.restore_rng_states(_on_cuda(states))
    assert list(restored) == [0] and torch.equal(restored[0], torch.arange(16, dtype=torch.uint8))


# ------------------------------------------------------------------------ 3. total batch over processes and GPUs
def _batch_opt(per_gpu, total=None, dist=False, world_size=1, num_gpu=1, name='001_X_B32G1_1k'):
    train = {'batch_size_per_gpu': per_gpu, **({} if total is None else {'total_batch_size': total})}
    return {'name': name, 'dist': dist, 'world_size': world_size, 'num_gpu': num_gpu, 'datasets': {'train': train}}


@pytest.mark.parametrize('dist,world_size,num_gpu,what', [(True, 4, 1, '4 processes'),
                                                          (False, 1, 4, '4 GPUs of DataParallel')])
def test_total_batch_against_processes_and_gpus(dist, world_size, num_gpu, what):
    from interir_plugin.models.unfolding_model import check_total_batch

    with pytest.raises(ValueError, match=rf'total_batch_size is 32, but this run steps on 128 images: {what}.* '
                                         r'x batch_size_per_gpu 32.*batch_size_per_gpu: 8 \(= 32 / 4\)'):
        check_total_batch(_batch_opt(32, 32, dist, world_size, num_gpu))
    assert check_total_batch(_batch_opt(8, 32, dist, world_size, num_gpu)) == 32
    with pytest.raises(ValueError, match='32 is not a multiple of 3'):
        check_total_batch(_batch_opt(8, 32, dist, 3 if dist else 1, 1 if dist else 3))
    with pytest.raises(ValueError, match='total_batch_size must be a positive int'):
        check_total_batch(_batch_opt(8, '32', dist, world_size, num_gpu))


def test_total_batch_unset_warns_with_both_numbers(monkeypatch):
    from interir_plugin.models import unfolding_model

    warned = []

    class Logger:
        def warning(self, message):
            warned.append(message)

    monkeypatch.setattr(unfolding_model, 'get_root_logger', lambda: Logger())
    assert unfolding_model.check_total_batch(_batch_opt(32, dist=True, world_size=2)) == 64
    assert any('total batch 64 = 2 processes x batch_size_per_gpu 32' in w for w in warned)
    assert any('says total batch 32 on 1 GPU(s); this run steps on 64' in w for w in warned)
    warned.clear()
    assert unfolding_model.check_total_batch(_batch_opt(32, num_gpu=0)) == 32 and not warned  # one CPU process


def test_model_refuses_a_run_whose_total_batch_differs(tmp_path):
    opt = _model_opt(tmp_path, network_g={'type': 'InterIR', 'num_feat': 8, 'unshuffle': 4, 'num_stages': 1,
                                          'num_experts': 1, 'expand': 1, 'recognise': False},
                     dist=True, world_size=2,
                     datasets={'train': {'batch_size_per_gpu': 4, 'total_batch_size': 4}})
    with pytest.raises(ValueError, match=r'datasets.train.total_batch_size is 4, but this run steps on 8 images'):
        _build_model(opt)


def test_total_batch_size_key_is_checked_in_files_and_datasets(tmp_path):
    import yaml

    from interir_plugin.data.multi_degradation_dataset import MultiDegradationPairedDataset
    from interir_plugin.tools.options import check_option_file

    def write(datasets):
        opt = {'name': 'x', 'model_type': 'UnfoldingRestorationModel', 'network_g': {'type': 'InterIR'},
               'datasets': datasets, 'train': {}}
        path = tmp_path / 'x.yml'
        path.write_text(yaml.safe_dump(opt))
        return str(path)

    train = {'type': 'MultiDegradationPairedDataset', 'batch_size_per_gpu': 8}
    check_option_file(write({'train': {**train, 'total_batch_size': 32}}), is_train=True)
    with pytest.raises(ValueError, match='datasets.train.total_batch_size must be a positive int'):
        check_option_file(write({'train': {**train, 'total_batch_size': 0}}), is_train=True)
    with pytest.raises(ValueError, match='datasets.val_1.total_batch_size applies to the training set only'):
        check_option_file(write({'train': train, 'val_1': {'type': 'MultiDegradationPairedDataset',
                                                            'total_batch_size': 8}}), is_train=True)
    clear = tmp_path / 'clear'
    clear.mkdir()
    import cv2
    cv2.imwrite(str(clear / 'a.png'), photo_crop('astronaut', (32, 32)))
    source = [{'label': 'rain', 'dataroot_gt': str(clear), 'synthesis': 'rain'}]
    MultiDegradationPairedDataset({'phase': 'train', 'gt_size': 16, 'sources': source, 'total_batch_size': 8})
    with pytest.raises(ValueError, match='total_batch_size applies to training only'):
        MultiDegradationPairedDataset({'phase': 'val', 'sources': source, 'total_batch_size': 8})


# ------------------------------------------------------------------------------------------- 4. NCCL timeout
@pytest.fixture
def captured_process_group(monkeypatch):
    """``init_process_group`` replaced by a recorder; torchrun's variables of a one-process job."""
    import datetime

    import torch.distributed as dist

    calls = []
    monkeypatch.setattr(dist, 'init_process_group', lambda **kwargs: calls.append(kwargs))
    for key, value in (('RANK', '0'), ('WORLD_SIZE', '1'), ('LOCAL_RANK', '0'), ('MASTER_ADDR', '127.0.0.1'),
                       ('MASTER_PORT', '29555')):
        monkeypatch.setenv(key, value)
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: False)
    # init_dist sets the 'spawn' start method when none is set: keep this test process's as it is
    monkeypatch.setattr(torch.multiprocessing, 'set_start_method', lambda method: None)
    return calls, datetime.timedelta


def test_init_dist_passes_the_option_files_timeout(captured_process_group, tmp_path, monkeypatch):
    import sys

    import yaml

    from interir_plugin import compat

    calls, timedelta = captured_process_group
    path = tmp_path / 'x.yml'
    path.write_text(yaml.safe_dump({'name': 'x', 'dist_params': {'backend': 'nccl', 'port': 29500,
                                                                 'timeout_minutes': 90}}))
    monkeypatch.setattr(sys, 'argv', ['interir train', '-opt', str(path), '--launcher', 'pytorch'])
    compat.init_dist('pytorch')  # torchrun: BasicSR passes no dist_params
    assert calls[-1]['timeout'] == timedelta(minutes=90) and calls[-1]['backend'] == 'gloo'
    compat.init_dist('pytorch', timeout_minutes=5)  # slurm: BasicSR passes dist_params as keywords
    assert calls[-1]['timeout'] == timedelta(minutes=5)
    path.write_text(yaml.safe_dump({'name': 'x'}))
    compat.init_dist('pytorch')
    assert calls[-1]['timeout'] == timedelta(minutes=compat.DEFAULT_DIST_TIMEOUT_MINUTES) > timedelta(minutes=10)
    with pytest.raises(ValueError, match='dist_params.timeout_minutes must be a positive number'):
        compat.init_dist('pytorch', timeout_minutes=0)


def test_basicsr_parse_options_reaches_the_timeout(captured_process_group, tmp_path, monkeypatch):
    """BasicSR's own ``parse_options`` (what ``interir train --launcher pytorch`` runs) ends in the shim with the file's
    timeout."""
    import sys

    import yaml
    from basicsr.utils.options import parse_options

    calls, timedelta = captured_process_group
    monkeypatch.setattr(torch.distributed, 'is_initialized', lambda: False)  # get_dist_info: a 1-process view
    path = tmp_path / 'x.yml'
    path.write_text(yaml.safe_dump({'name': 'x', 'model_type': 'UnfoldingRestorationModel', 'num_gpu': 0,
                                    'manual_seed': 0, 'datasets': {}, 'path': {},
                                    'dist_params': {'timeout_minutes': 45}}))
    monkeypatch.setattr(sys, 'argv', ['interir train', '-opt', str(path), '--launcher', 'pytorch'])
    parse_options(str(tmp_path), is_train=False)
    assert calls and calls[-1]['timeout'] == timedelta(minutes=45)


def test_dist_params_keys_are_checked(tmp_path):
    import yaml

    from interir_plugin.tools.options import check_option_file

    def check(params):
        path = tmp_path / 'x.yml'
        path.write_text(yaml.safe_dump({'name': 'x', 'model_type': 'UnfoldingRestorationModel',
                                        'network_g': {'type': 'InterIR'}, 'datasets': {'val_1': {
                                            'type': 'MultiDegradationPairedDataset'}}, 'dist_params': params}))
        return check_option_file(str(path), is_train=False)

    check({'backend': 'nccl', 'port': 29500, 'timeout_minutes': 120})
    with pytest.raises(ValueError, match=r"unknown option dist_params.timeout \(did you mean 'timeout_minutes'"):
        check({'timeout': 120})
    with pytest.raises(ValueError, match='dist_params.timeout_minutes must be a positive number'):
        check({'timeout_minutes': -1})


# ------------------------------------------------------------------------------- 5. fresh draws in training
@pytest.fixture
def noise_source(tmp_path):
    import cv2

    clear = tmp_path / 'clear'
    clear.mkdir()
    for i, name in enumerate(PHOTO_NAMES[:3]):
        cv2.imwrite(str(clear / f'{i}.png'), photo_crop(name, (32, 32), 8 * i, 8 * i))
    return [{'label': 'denoise', 'dataroot_gt': str(clear), 'synthesis': {'noise': {'sigma': [5, 50]}}}]


def _dataset(sources, phase, **opt):
    from interir_plugin.data.multi_degradation_dataset import MultiDegradationPairedDataset

    extra = {'gt_size': 32, 'use_hflip': False, 'use_rot': False} if phase == 'train' else {}
    return MultiDegradationPairedDataset({'phase': phase, 'sources': sources, 'seed': 7, **extra, **opt})


def _epochs(dataset, workers, persistent=False, epochs=2):
    """The LQ of index 0 in each of ``epochs`` passes of a data loader (in index order)."""
    loader = torch.utils.data.DataLoader(dataset, batch_size=None, num_workers=workers,
                                         persistent_workers=persistent and workers > 0,
                                         multiprocessing_context='fork' if workers else None)
    return [next(iter(loader))['lq'] for _ in range(epochs)]


@pytest.mark.parametrize('workers,persistent', [(0, False), (1, False), (1, True)])
def test_training_draws_anew_every_epoch_validation_does_not(noise_source, workers, persistent):
    torch.manual_seed(0)
    first, second = _epochs(_dataset(noise_source, 'train'), workers, persistent)
    assert not torch.equal(first, second)  # same index, same crop (whole 32 x 32, no flips): new noise
    first, second = _epochs(_dataset(noise_source, 'val'), workers, persistent)
    assert torch.equal(first, second)
    first, second = _epochs(_dataset(noise_source, 'train', fresh_synthesis=False), workers, persistent)
    assert torch.equal(first, second)  # the earlier behaviour, on request


def test_fresh_draws_follow_the_restored_generators(noise_source):
    """Kill-and-resume stays exact: a training sample depends only on the generator states a resume restores."""
    from interir_plugin.utils.resume import restore_rng_states, rng_states

    dataset = _dataset(noise_source, 'train', use_hflip=True, use_rot=True, gt_size=16)
    torch.manual_seed(11)
    saved = rng_states()
    first = [dataset[i]['lq'] for i in range(3)]
    restore_rng_states(saved)
    assert all(torch.equal(a, dataset[i]['lq']) for i, a in enumerate(first))


def test_fresh_synthesis_key_is_checked(noise_source):
    with pytest.raises(ValueError, match='fresh_synthesis must be true or false'):
        _dataset(noise_source, 'train', fresh_synthesis='yes')
    with pytest.raises(ValueError, match='fresh_synthesis applies to training only'):
        _dataset(noise_source, 'val', fresh_synthesis=True)


# ------------------------------------------------------------------------------ 8. no host sync before backward
@pytest.fixture
def host_syncs(monkeypatch):
    """Records, in order, ``backward`` calls and every tensor -> Python conversion (``item``, ``bool``, ``float``,
    ``int``, ``tolist``): each of them waits for the device on a GPU."""
    events = []
    for name in ('item', '__bool__', '__float__', '__int__', 'tolist'):
        original = getattr(torch.Tensor, name)

        def record(self, *args, _name=name, _original=original, **kwargs):
            events.append(_name)
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(torch.Tensor, name, record)
    backward = torch.Tensor.backward

    def record_backward(self, *args, **kwargs):
        events.append('backward')
        return backward(self, *args, **kwargs)

    monkeypatch.setattr(torch.Tensor, 'backward', record_backward)
    return events


@pytest.mark.parametrize('grad_clip', [None, 1.0])
def test_finiteness_is_decided_after_backward(tmp_path, host_syncs, grad_clip):
    model = _build_model(_model_opt(tmp_path, train={'grad_clip': grad_clip}))
    model.feed_data(_labelled_batch())
    host_syncs.clear()
    model.optimize_parameters(1)
    assert 'backward' in host_syncs
    before = host_syncs[:host_syncs.index('backward')]
    assert not before, f'host syncs before backward: {before}'  # before the fix: item() of the finiteness check


def test_a_nonfinite_step_is_still_skipped_without_moving_anything(tmp_path):
    model = _build_model(_model_opt(tmp_path, train={'grad_clip': 1.0}))
    data = _labelled_batch()
    data['gt'][0, 0, 0, 0] = float('nan')
    before = [p.detach().clone() for p in model.net_g.parameters()]
    ema = [p.detach().clone() for p in model.net_g_ema.parameters()]
    model.feed_data(data)
    model.optimize_parameters(1)
    assert model.nonfinite_steps == 1 and all(p.grad is None for p in model.net_g.parameters())
    assert all(torch.equal(a, b) for a, b in zip(before, model.net_g.parameters()))
    assert all(torch.equal(a, b) for a, b in zip(ema, model.net_g_ema.parameters()))


def test_dgunet_projection_needs_no_checked_solve(monkeypatch):
    """``torch.linalg.solve`` checks the factorisation on the host (a sync per merge block on a GPU);
    ``solve_ex`` gives the same values without the check."""
    from interir_plugin.archs.dgunet_arch import DGUNet, subspace_projection

    basis, feat = torch.randn(2, 16, 8, 8), torch.randn(2, 5, 8, 8)
    expected = subspace_projection(basis, feat)
    monkeypatch.setattr(torch.linalg, 'solve', lambda *a, **k: pytest.fail('torch.linalg.solve syncs the host'))
    assert torch.equal(subspace_projection(basis, feat), expected)
    net = DGUNet(n_feat=8, scale_unetfeats=4, scale_orsnetfeats=4, depth=2)
    with torch.no_grad():
        out = net(torch.rand(1, 3, 16, 16))
    assert torch.isfinite(out[-1]).all()


# --------------------------------------------------------------------------------- 10. --device cuda:i in the tools
@pytest.fixture
def two_fake_gpus(monkeypatch):
    """A CPU process that believes it has two CUDA devices: every move of a tensor or module to a CUDA device is
    recorded and stays on the CPU; ``torch.cuda.device(i)`` records the current device."""
    moves, current = [], {'index': 0}
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: True)
    monkeypatch.setattr(torch.cuda, 'device_count', lambda: 2)
    monkeypatch.setattr(torch.cuda, 'current_device', lambda: current['index'])
    monkeypatch.setattr(torch.cuda, 'empty_cache', lambda: None)
    original_to = torch.Tensor.to

    def on_cpu(device):
        if isinstance(device, (str, torch.device)) and torch.device(device).type == 'cuda':
            moves.append(torch.device(device))
            return torch.device('cpu')
        return device

    def fake_to(self, *args, **kwargs):
        args = [on_cpu(a) for a in args]
        if 'device' in kwargs:
            kwargs['device'] = on_cpu(kwargs['device'])
        return original_to(self, *args, **kwargs)

    class FakeDeviceContext:
        def __init__(self, device):
            self.index = torch.device(device).index if not isinstance(device, int) else device

        def __enter__(self):
            self.prev, current['index'] = current['index'], (current['index'] if self.index is None else self.index)

        def __exit__(self, *exc):
            current['index'] = self.prev

    monkeypatch.setattr(torch.Tensor, 'to', fake_to)
    monkeypatch.setattr(torch.cuda, 'device', FakeDeviceContext)
    return moves, current


def test_resolve_device_keeps_the_index(two_fake_gpus):
    from interir_plugin.tools.loading import resolve_device

    assert resolve_device('cuda:1') == torch.device('cuda', 1)
    assert resolve_device('auto') == torch.device('cuda')
    with pytest.raises(ValueError, match=r"device 'cuda:2' requested but this machine has 2 CUDA device\(s\)"):
        resolve_device('cuda:2')


def test_infer_runs_on_the_device_asked_for(two_fake_gpus, tmp_path):
    """``interir infer --device cuda:1`` (explain and audit build their model the same way): the network and every
    input go to cuda:1, nothing to BasicSR's ``torch.device('cuda')`` (the current device, cuda:0)."""
    import cv2
    import yaml

    from interir_plugin.cli import main

    moves, _ = two_fake_gpus
    net_opt = {'type': 'InterIR', 'num_feat': 8, 'num_stages': 1, 'num_experts': 1, 'expand': 1, 'recognise': False}
    path = tmp_path / 'tiny.yml'
    path.write_text(yaml.safe_dump({'name': 'tiny', 'model_type': 'UnfoldingRestorationModel', 'num_gpu': 0,
                                    'network_g': net_opt, 'path': {'pretrain_network_g': None}}))
    (tmp_path / 'in').mkdir()
    cv2.imwrite(str(tmp_path / 'in' / 'a.png'), photo_crop('astronaut', (24, 24)))
    with pytest.warns(UserWarning, match='RANDOM weights'):
        assert main(['infer', '-opt', str(path), '--input', str(tmp_path / 'in'), '--output',
                     str(tmp_path / 'out'), '--device', 'cuda:1']) == 0
    assert (tmp_path / 'out' / 'a.png').is_file()
    assert moves and set(moves) == {torch.device('cuda', 1)}, moves  # before: the network went to 'cuda'


def test_build_restorer_puts_model_and_network_on_the_indexed_device(two_fake_gpus):
    from interir_plugin.tools.loading import build_restorer, resolve_device

    moves, _ = two_fake_gpus
    opt = {'name': 'x', 'network_g': {'type': 'InterIR', 'num_feat': 8, 'num_stages': 1, 'num_experts': 1,
                                      'expand': 1}, 'path': {'pretrain_network_g': None}}
    with pytest.warns(UserWarning):
        model = build_restorer(opt, resolve_device('cuda:1'))
    assert model.device == torch.device('cuda', 1)
    assert moves and set(moves) == {torch.device('cuda', 1)}


def test_bench_runs_basicsr_on_the_device_asked_for(two_fake_gpus, tmp_path, monkeypatch):
    """BasicSR's test pipeline puts the model on ``torch.device('cuda')``: bench runs it with cuda:1 current."""
    import yaml

    from interir_plugin.tools import bench as bench_module

    _, current = two_fake_gpus
    seen = []

    class Stop(Exception):
        pass

    def run_basicsr(kind, path, root, force_yml):
        seen.append((current['index'], force_yml))
        raise Stop

    monkeypatch.setattr(bench_module, 'run_basicsr', run_basicsr)
    monkeypatch.setattr(bench_module, 'route_basicsr_log', lambda *a, **k: None)
    path = tmp_path / 'test_x.yml'
    path.write_text(yaml.safe_dump({'name': 'x', 'model_type': 'UnfoldingRestorationModel', 'num_gpu': 1,
                                    'network_g': {'type': 'InterIR'}, 'path': {'pretrain_network_g': 'w.pth'},
                                    'datasets': {'test_1': {'name': 'set', 'type': 'MultiDegradationPairedDataset'}},
                                    'val': {'metrics': {'psnr': {'type': 'calculate_psnr', 'crop_border': 0}}}}))
    with pytest.raises(Stop):
        bench_module.bench([str(path)], str(tmp_path / 'out'), root=str(tmp_path), device='cuda:1',
                           log=lambda *a: None)
    assert seen == [(1, ['model_type=UnfoldingRestorationModel', 'num_gpu=1'])]


# ------------------------------------------------------------------------- 7. micro-batches; 6. MixUp (recipes)
def _plain_params(model):
    return [p.detach().clone() for p in model.net_g.parameters()]


def test_micro_batches_give_the_whole_batchs_step(tmp_path):
    """Two chunks of 2 images step like one batch of 4 (no batch statistics in this InterIR: recognise false)."""
    net = {'type': 'InterIR', 'num_feat': 8, 'unshuffle': 4, 'num_stages': 1, 'num_experts': 2, 'expand': 1,
           'recognise': False}
    train = {'ema_decay': 0, 'optim_g': {'type': 'SGD', 'lr': 0.5},
             'edge_opt': {'type': 'EdgeLoss', 'loss_weight': 0.05}, 'grad_clip': 10.0}
    data = _labelled_batch()
    params, logs = [], []
    for micro in (1, 2):
        torch.manual_seed(0)
        model = _build_model(_model_opt(tmp_path, network_g=net, train={**train, 'micro_batches': micro}))
        model.feed_data(data)
        model.optimize_parameters(1)
        params.append(_plain_params(model))
        logs.append(model.get_current_log())
    assert any(not torch.equal(a, b) for a, b in zip(params[0], _plain_params(_build_model(
        _model_opt(tmp_path, network_g=net, train=train)))))  # the step moved the weights
    for a, b in zip(*params):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)
    assert logs[0]['l_total'] == pytest.approx(logs[1]['l_total'], rel=1e-5)
    assert logs[0]['grad_norm'] == pytest.approx(logs[1]['grad_norm'], rel=1e-4)


def test_mixup_mixes_input_and_target_alike_from_its_iteration(tmp_path):
    net = {'type': 'InterIR', 'num_feat': 8, 'unshuffle': 4, 'num_stages': 1, 'num_experts': 1, 'expand': 1,
           'recognise': False}
    model = _build_model(_model_opt(tmp_path, network_g=net, train={'mixup': {'from_iter': 3, 'beta': 0.6}}))
    data = _labelled_batch()
    model.feed_data(data)
    model.optimize_parameters(2)
    assert torch.equal(model.lq, data['lq'])  # before from_iter: untouched
    torch.manual_seed(4)
    model.feed_data(data)
    model.optimize_parameters(3)
    mixed_gt, mixed_lq = model.gt, model.lq
    assert not torch.equal(mixed_gt, data['gt'])
    torch.manual_seed(4)
    order = torch.randperm(4)
    lam = torch.distributions.Beta(torch.tensor(0.6), torch.tensor(0.6)).sample((4,)).view(4, 1, 1, 1)
    torch.testing.assert_close(mixed_gt, lam * data['gt'] + (1 - lam) * data['gt'][order])
    torch.testing.assert_close(mixed_lq, lam * data['lq'] + (1 - lam) * data['lq'][order])
    one = model.mix_batch(data['gt'][:1], data['lq'][:1])  # a batch of one (DGUNet's official SIDD batch): unchanged
    torch.testing.assert_close(one[0], data['gt'][:1]) and torch.testing.assert_close(one[1], data['lq'][:1])


@pytest.mark.parametrize('train,match', [
    ({'micro_batches': 0}, 'train.micro_batches must be a positive int'),
    ({'mixup': {'from_iter': 0, 'beta': 0.6}}, 'train.mixup.from_iter must be an int >= 1'),
    ({'mixup': {'from_iter': 5, 'beta': -1}}, 'train.mixup.beta must be a positive number'),
    ({'mixup': {'from_iter': 5, 'beta': 1, 'alpha': 1}}, 'unknown option train.mixup.alpha'),
    ({'mixup': {'from_iter': 5, 'beta': 0.6}}, 'train.mixup: network_g InterIR learns presence gates'),
])
def test_micro_batch_and_mixup_options_are_checked(tmp_path, train, match):
    with pytest.raises(ValueError, match=match):
        _build_model(_model_opt(tmp_path, train=train))


# ------------------------------------------------------------------------------------ 6. centred test crops
def test_center_crop_keeps_the_middle_as_airnet_and_promptir(tmp_path):
    import cv2
    import numpy as np

    from interir_plugin.data.multi_degradation_dataset import crop_to_multiple

    img = np.arange(37 * 45).reshape(37, 45).astype(np.float32)
    # PromptIR utils/image_utils.py crop_img: image[crop_h // 2:h - crop_h + crop_h // 2, crop_w // 2:...]
    assert np.array_equal(crop_to_multiple(img, 16, 'center'), img[2:34, 6:38])
    assert np.array_equal(crop_to_multiple(img, 16, 'top_left'), img[:32, :32])
    gt = tmp_path / 'gt'
    lq = tmp_path / 'lq'
    gt.mkdir()
    lq.mkdir()
    photo = photo_crop('astronaut', (37, 45))
    cv2.imwrite(str(gt / 'a.png'), photo)
    cv2.imwrite(str(lq / 'a.png'), photo[::-1].copy())
    source = [{'label': 'x', 'dataroot_gt': str(gt), 'dataroot_lq': str(lq)}]
    centre = _dataset(source, 'val', crop_multiple=16, crop_mode='center')[0]
    corner = _dataset(source, 'val', crop_multiple=16)[0]  # the default stays top-left
    assert centre['gt'].shape == corner['gt'].shape == (3, 32, 32)
    expected = torch.from_numpy(photo[2:34, 6:38, ::-1].transpose(2, 0, 1) / 255.).float()
    torch.testing.assert_close(centre['gt'], expected)
    assert not torch.equal(centre['gt'], corner['gt'])
    with pytest.raises(ValueError, match='crop_mode must be one of top_left, center'):
        _dataset(source, 'val', crop_multiple=16, crop_mode='middle')
    with pytest.raises(ValueError, match='crop_mode needs crop_multiple'):
        _dataset(source, 'val', crop_mode='center')


# ------------------------------------------------------------------------ 9. pin_memory, persistent_workers
def test_loader_keys_are_accepted_and_reach_the_data_loader(noise_source):
    from basicsr.data import build_dataloader

    opt = {'phase': 'train', 'sources': noise_source, 'gt_size': 16, 'num_worker_per_gpu': 1,
           'batch_size_per_gpu': 2, 'pin_memory': True, 'persistent_workers': True, 'total_batch_size': 2}
    dataset = _dataset(noise_source, 'train', **{k: v for k, v in opt.items() if k not in ('phase', 'sources')})
    loader = build_dataloader(dataset, opt, num_gpu=1, dist=False, sampler=None, seed=0)
    assert loader.pin_memory is True and loader.persistent_workers is True and loader.num_workers == 1


def test_loader_keys_are_checked_in_option_files(tmp_path):
    import yaml

    from interir_plugin.tools.options import check_option_file

    def check(train, val=None):
        datasets = {'train': {'type': 'MultiDegradationPairedDataset', 'batch_size_per_gpu': 2, **train}}
        if val is not None:
            datasets['val_1'] = {'type': 'MultiDegradationPairedDataset', **val}
        path = tmp_path / 'x.yml'
        path.write_text(yaml.safe_dump({'name': 'x', 'model_type': 'UnfoldingRestorationModel',
                                        'network_g': {'type': 'InterIR'}, 'datasets': datasets, 'train': {}}))
        return check_option_file(str(path), is_train=True)

    check({'num_worker_per_gpu': 4, 'pin_memory': True, 'persistent_workers': True})
    with pytest.raises(ValueError, match='datasets.train.pin_memory must be true or false'):
        check({'num_worker_per_gpu': 4, 'pin_memory': 'yes'})
    with pytest.raises(ValueError, match='datasets.train.persistent_workers needs worker processes'):
        check({'num_worker_per_gpu': 0, 'persistent_workers': True})
    with pytest.raises(ValueError, match='datasets.val_1.persistent_workers needs worker processes'):
        check({'num_worker_per_gpu': 4}, {'persistent_workers': True})


def test_gpu_option_files_memory_count_equals_a_real_cpu_count():
    """benchmarks/bench_gpu_memory.py counts saved activations under FakeTensorMode: the same bytes as real tensors."""
    import sys

    sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'benchmarks'))
    from bench_gpu_memory import activation_bytes

    train = {'pixel_opt': {'type': 'CharbonnierLoss', 'eps': 1e-6}, 'edge_opt': {'type': 'EdgeLoss'},
             'frequency_opt': {'type': 'FrequencyLoss', 'loss_weight': 0.01}}
    for net in (GATED, {'type': 'DGUNet', 'n_feat': 8, 'scale_unetfeats': 4, 'scale_orsnetfeats': 4, 'depth': 1}):
        fake = activation_bytes(net, train, 2, 32, fake=True)
        real = activation_bytes(net, train, 2, 32, fake=False)
        assert fake == real and fake['activations'] > 0
