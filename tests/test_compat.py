"""Each compat shim: the failure it fixes reproduces without it (where it can on this machine); with it, it works."""
import importlib
import importlib.util
import inspect
import os
import subprocess
import sys

import pytest
import torch

import interir_plugin
from interir_plugin import compat


def _run(code):
    return subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, timeout=120)


def _tiny_state(path, it):
    torch.save({'epoch': 0, 'iter': it, 'optimizers': [{'state': {}, 'param_groups': [{'lr': 1e-4, 'params': [0]}]}],
                'schedulers': [{'milestones': {10: 1}, 'last_epoch': it}]}, path)


def test_applied_reports_every_shim():
    assert set(compat.APPLIED) == {'functional_tensor', 'cpu_resume', 'cpu_distributed', 'resumable_sampler'}
    assert interir_plugin.compat.apply() is compat.APPLIED  # idempotent


def _source(module):
    """Source text of an installed module, read from its file (what it does before any shim replaced a name)."""
    return inspect.getsource(importlib.import_module(module))


def test_functional_tensor_failure_reproduces_and_is_fixed():
    name = 'torchvision.transforms.functional_tensor'
    removed = importlib.util.find_spec('torchvision.transforms._functional_tensor') is not None and not any(
        os.path.isfile(os.path.join(p, 'functional_tensor.py'))
        for p in importlib.import_module('torchvision.transforms').__path__)
    needed = removed and compat._basicsr_imports(name)  # this torchvision lacks it and this BasicSR imports it
    assert compat.APPLIED['functional_tensor'] is needed
    bare = _run('import basicsr.data.degradations')
    if needed:  # without the shim the import fails, naming the module
        assert bare.returncode != 0 and 'functional_tensor' in bare.stderr
    else:  # nothing to fix: BasicSR imports without it
        assert bare.returncode == 0, bare.stderr
    shimmed = _run('import interir_plugin, basicsr.data.degradations as d; print(d.rgb_to_grayscale.__name__)')
    assert shimmed.returncode == 0, shimmed.stderr
    assert 'rgb_to_grayscale' in shimmed.stdout


def test_functional_tensor_alias_is_noop_when_module_present():
    assert compat.alias_functional_tensor() is False  # installed now, so a second call does nothing


def _resume_opt(tmp_path, auto):
    return {'name': 'exp', 'auto_resume': auto, 'path': {'resume_state': str(tmp_path / '4.state')}}


@pytest.mark.skipif(torch.cuda.is_available(), reason='the original works on a CUDA machine')
def test_cpu_resume_failure_reproduces_and_is_fixed(tmp_path, monkeypatch):
    import basicsr.train

    _tiny_state(tmp_path / '4.state', 4)
    monkeypatch.setattr('basicsr.utils.check_resume', lambda opt, it: None)
    original = compat.ORIGINALS.get('basicsr.train.load_resume_state')
    needed = 'torch.cuda.current_device' in _source('basicsr.train')  # this BasicSR maps states to CUDA
    assert (original is not None) is needed is compat.APPLIED['cpu_resume']
    if needed:  # it must fail here without the shim
        with pytest.raises((RuntimeError, AssertionError)):
            original(_resume_opt(tmp_path, auto=False))
        assert basicsr.train.load_resume_state is compat.load_resume_state
    state = basicsr.train.load_resume_state(_resume_opt(tmp_path, auto=False))
    assert state['iter'] == 4
    assert state['schedulers'][0]['milestones'] == {10: 1}


def test_auto_resume_skips_a_truncated_newest_state(tmp_path, monkeypatch, capsys):
    states = tmp_path / 'experiments' / 'exp' / 'training_states'
    states.mkdir(parents=True)
    _tiny_state(states / '2.state', 2)
    _tiny_state(states / '4.state', 4)
    data = (states / '4.state').read_bytes()
    (states / '4.state').write_bytes(data[: len(data) // 2])  # a kill during the write
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr('basicsr.utils.check_resume', lambda opt, it: None)
    opt = {'name': 'exp', 'auto_resume': True, 'path': {}}
    state = compat.load_resume_state(opt)
    assert state['iter'] == 2
    assert opt['path']['resume_state'].endswith('2.state')
    assert '4.state' in capsys.readouterr().err


def test_resume_refuses_code_execution(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ('pwned',))

    torch.save({'iter': 1, 'payload': Evil()}, tmp_path / '1.state')
    with pytest.raises(RuntimeError, match='1.state'):
        compat.load_resume_state({'name': 'x', 'auto_resume': False,
                                  'path': {'resume_state': str(tmp_path / '1.state')}})


def _free_port():
    import socket

    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        return sock.getsockname()[1]


@pytest.mark.skipif(torch.cuda.is_available(), reason='the originals work on a CUDA machine')
def test_distributed_on_cpu_failure_reproduces_and_is_fixed(monkeypatch):
    import torch.distributed as dist
    import torch.multiprocessing as mp
    from basicsr.models.base_model import BaseModel

    start_method = mp.get_start_method(allow_none=True)  # init_dist sets 'spawn' when unset; restore it after

    monkeypatch.setenv('RANK', '0')
    monkeypatch.setenv('LOCAL_RANK', '0')
    monkeypatch.setenv('WORLD_SIZE', '1')
    monkeypatch.setenv('MASTER_ADDR', '127.0.0.1')
    monkeypatch.setenv('MASTER_PORT', str(_free_port()))
    original = compat.ORIGINALS.get('basicsr.utils.options.init_dist')
    init_dist_needed = 'cuda.set_device' in _source('basicsr.utils.dist_util')
    assert (original is not None) is init_dist_needed
    if init_dist_needed:
        with pytest.raises(ZeroDivisionError):  # rank % torch.cuda.device_count()
            original('pytorch')
    compat.init_dist('pytorch')
    try:
        assert dist.get_backend() == 'gloo'

        class Stub:
            device = torch.device('cpu')
            opt = {'dist': True, 'num_gpu': 0}

        original_to_device = compat.ORIGINALS.get('basicsr.models.base_model.BaseModel.model_to_device')
        to_device_needed = 'cuda.current_device' in _source('basicsr.models.base_model')
        assert (original_to_device is not None) is to_device_needed
        assert compat.APPLIED['cpu_distributed'] is (init_dist_needed or to_device_needed)
        if to_device_needed:
            with pytest.raises((RuntimeError, AssertionError)):
                original_to_device(Stub(), torch.nn.Conv2d(1, 1, 1))
        wrapped = BaseModel.model_to_device(Stub(), torch.nn.Conv2d(1, 1, 1))
        assert isinstance(wrapped, torch.nn.parallel.DistributedDataParallel)
        assert wrapped(torch.ones(1, 1, 2, 2)).shape == (1, 1, 2, 2)
    finally:
        dist.destroy_process_group()
        mp.set_start_method(start_method, force=True)
