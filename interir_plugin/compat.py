"""Shims that let released BasicSR run on current torch/torchvision and on machines without CUDA.

The plugin supports BasicSR 1.4.2 from PyPI (2022) and newer BasicSR builds (git master, the
``basicsr-fixed`` distribution). Each shim below checks whether the installed BasicSR needs it, changes
objects in memory only (no file on disk is patched) and records what it did in :data:`APPLIED`, so tests
and ``interir`` can report it. Of the plugin, this module imports only :mod:`interir_plugin.utils.checkpoint`
(torch and the standard library: the one checkpoint loader) at import, and :mod:`interir_plugin.utils.resume` when
:func:`apply` runs, after the ``functional_tensor`` alias; ``interir_plugin/__init__.py`` imports it before anything
touches ``basicsr``.
"""
import importlib
import importlib.util
import inspect
import os
import os.path as osp
import sys

import torch

from interir_plugin.utils.checkpoint import load_checkpoint

#: name of each shim -> True if it acted in this process, False if it was not needed.
APPLIED = {}
#: what a shim replaced, by dotted name, so tests can show the original failure.
ORIGINALS = {}


def _basicsr_imports(module):
    """Whether the installed BasicSR's ``basicsr/data/degradations.py`` imports ``module`` (read, not imported)."""
    spec = importlib.util.find_spec('basicsr')
    if spec is None or not spec.submodule_search_locations:
        return False
    path = osp.join(list(spec.submodule_search_locations)[0], 'data', 'degradations.py')
    if not osp.isfile(path):
        return False
    with open(path, encoding='utf-8') as f:
        return f'from {module} import' in f.read()


def alias_functional_tensor():
    """torchvision >= 0.17 removed ``torchvision.transforms.functional_tensor``, which BasicSR 1.4.2 imports in
    ``basicsr/data/degradations.py`` (``rgb_to_grayscale``), so ``import basicsr`` fails. Register the private
    successor module under the old name.

    Returns:
        bool: True if the alias was installed, False if the old module exists or BasicSR does not import it.
    """
    name = 'torchvision.transforms.functional_tensor'
    if name in sys.modules or importlib.util.find_spec(name) is not None or not _basicsr_imports(name):
        return False
    try:
        successor = importlib.import_module('torchvision.transforms._functional_tensor')
    except ModuleNotFoundError:  # a torchvision without the private module: the public one has the function
        successor = importlib.import_module('torchvision.transforms.functional')
    sys.modules[name] = successor
    return True


def _state_location():
    """``map_location`` for resume states: the current CUDA device when there is one, else the CPU."""
    if torch.cuda.is_available():
        return torch.device('cuda', torch.cuda.current_device())
    return torch.device('cpu')


def latest_complete_state(state_dir):
    """Path of the newest ``<iter>.state`` in ``state_dir`` that loads, or None.

    A state that fails to load (a kill during a write by a BasicSR that does not write atomically) is
    skipped with a warning, so ``--auto_resume`` falls back to the previous one instead of dying.
    """
    if not osp.isdir(state_dir):
        return None
    iters = []
    for name in os.listdir(state_dir):
        stem, ext = osp.splitext(name)
        if ext == '.state' and stem.isdigit():
            iters.append(int(stem))
    for it in sorted(iters, reverse=True):
        path = osp.join(state_dir, f'{it}.state')
        try:
            load_checkpoint(path, 'cpu', what='training state')
        except RuntimeError as err:
            print(f'[interir_plugin] skipping unreadable training state: {err}', file=sys.stderr, flush=True)
            continue
        return path
    return None


def load_resume_state(opt):
    """Drop-in for ``basicsr.train.load_resume_state`` that works without CUDA and loads safely.

    Same contract as BasicSR's: with ``opt['auto_resume']`` the newest state under
    ``experiments/<name>/training_states`` is used (the newest *complete* one here), otherwise
    ``opt['path']['resume_state']``; the state is checked with BasicSR's ``check_resume``.
    """
    from basicsr.utils import check_resume

    if opt['auto_resume']:
        path = latest_complete_state(osp.join('experiments', opt['name'], 'training_states'))
        if path is not None:
            opt['path']['resume_state'] = path
    else:
        path = opt['path'].get('resume_state')
    if path is None:
        return None
    state = load_checkpoint(path, _state_location(), what='training state')
    check_resume(opt, state['iter'])
    return state


def patch_resume_state_loader():
    """BasicSR (1.4.2 and master) maps resume states with ``torch.cuda.current_device()``, so
    ``--auto_resume`` and ``path.resume_state`` die on a machine without CUDA, and it unpickles without
    ``weights_only``. Replace ``basicsr.train.load_resume_state`` (looked up at call time by
    ``train_pipeline``) with :func:`load_resume_state`.

    Returns:
        bool: True if replaced, False if the installed BasicSR does not call ``torch.cuda.current_device``.
    """
    import basicsr.train

    current = basicsr.train.load_resume_state
    if current is load_resume_state:
        return False
    if 'cuda.current_device' not in inspect.getsource(current):
        return False
    ORIGINALS['basicsr.train.load_resume_state'] = current
    basicsr.train.load_resume_state = load_resume_state
    return True


#: Minutes a collective may wait before the process group's watchdog ends the run, when the option file sets no
#: ``dist_params.timeout_minutes``. BasicSR validates on rank 0 alone while the other ranks wait in the next
#: all-reduce: a 5-task validation (1,794 images, 1,111 of them 1280 x 720) takes about the NCCL default of 10
#: minutes, an InterIR-L one longer.
DEFAULT_DIST_TIMEOUT_MINUTES = 60


def _option_file_dist_params(argv):
    """``dist_params`` of the option file named by ``-opt``/``--opt`` in ``argv`` (BasicSR's command line), or {}."""
    import argparse

    import yaml

    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument('-opt', '--opt', default=None)
    path = parser.parse_known_args(list(argv[1:]))[0].opt
    if not path or not osp.isfile(path):
        return {}
    try:
        with open(path, encoding='utf-8') as f:
            opt = yaml.safe_load(f)
    except (OSError, yaml.YAMLError):
        return {}  # BasicSR's own loading reports it
    params = opt.get('dist_params') if isinstance(opt, dict) else None
    return params if isinstance(params, dict) else {}


def dist_timeout_minutes(timeout_minutes=None, argv=None):
    """The process group's timeout in minutes: ``timeout_minutes`` if given (BasicSR passes ``dist_params`` to
    ``init_dist`` under slurm), else the option file's ``dist_params.timeout_minutes`` (torchrun: BasicSR passes
    nothing, so the file named by ``-opt`` in ``argv`` is read), else :data:`DEFAULT_DIST_TIMEOUT_MINUTES`.

    Args:
        timeout_minutes (int | float | None): Explicit value. Default: None.
        argv (list[str] | None): Command line. Default: None (``sys.argv``).

    Returns:
        float: Minutes.
    """
    if timeout_minutes is None:
        timeout_minutes = _option_file_dist_params(sys.argv if argv is None else argv).get('timeout_minutes')
    if timeout_minutes is None:
        return float(DEFAULT_DIST_TIMEOUT_MINUTES)
    if isinstance(timeout_minutes, bool) or not isinstance(timeout_minutes, (int, float)) or not timeout_minutes > 0:
        raise ValueError(f'option dist_params.timeout_minutes must be a positive number, got {timeout_minutes!r}')
    return float(timeout_minutes)


def init_dist(launcher, backend=None, timeout_minutes=None, **kwargs):
    """``basicsr.utils.dist_util.init_dist`` that also works without CUDA, with a configurable timeout.

    BasicSR selects NCCL and calls ``torch.cuda.set_device(rank % torch.cuda.device_count())``, which divides by
    zero on a CPU machine. Here the backend defaults to NCCL with CUDA and gloo without, and the CUDA device is set
    only when there is one. Launchers: ``pytorch`` (torchrun's ``RANK``/``WORLD_SIZE``/``MASTER_*`` variables) and
    ``slurm`` (``SLURM_PROCID``/``SLURM_NTASKS``/``SLURM_NODELIST``, master port from ``port``, ``MASTER_PORT`` or
    29500, as BasicSR documents). BasicSR passes no timeout, so a validation on rank 0 longer than NCCL's 10
    minutes ended the run; here it is :func:`dist_timeout_minutes` (``dist_params.timeout_minutes``, default
    :data:`DEFAULT_DIST_TIMEOUT_MINUTES`).

    Args:
        launcher (str): ``pytorch`` or ``slurm``.
        backend (str | None): Process-group backend. Default: None (NCCL with CUDA, gloo without).
        timeout_minutes (int | float | None): Collective timeout. Default: None (see :func:`dist_timeout_minutes`).
        **kwargs: ``port`` (slurm) and further ``torch.distributed.init_process_group`` arguments.
    """
    import datetime
    import subprocess

    import torch.distributed as dist
    import torch.multiprocessing as mp

    if mp.get_start_method(allow_none=True) is None:
        mp.set_start_method('spawn')
    cuda = torch.cuda.is_available()
    backend = backend or ('nccl' if cuda else 'gloo')
    if launcher == 'pytorch':
        rank = int(os.environ['RANK'])
    elif launcher == 'slurm':
        rank = int(os.environ['SLURM_PROCID'])
        port = kwargs.pop('port', None)
        os.environ['MASTER_PORT'] = str(port) if port is not None else os.environ.get('MASTER_PORT', '29500')
        node_list = os.environ['SLURM_NODELIST']
        os.environ.setdefault('MASTER_ADDR', subprocess.getoutput(f'scontrol show hostname {node_list} | head -n1'))
        os.environ['WORLD_SIZE'] = os.environ['SLURM_NTASKS']
        os.environ['RANK'] = str(rank)
        os.environ['LOCAL_RANK'] = str(rank % max(torch.cuda.device_count(), 1))
    else:
        raise ValueError(f'Invalid launcher type: {launcher!r} (expected pytorch or slurm)')
    if cuda:
        torch.cuda.set_device(int(os.environ.get('LOCAL_RANK', rank)) % torch.cuda.device_count())
    timeout = datetime.timedelta(minutes=dist_timeout_minutes(timeout_minutes))
    dist.init_process_group(backend=backend, timeout=timeout, **kwargs)


def model_to_device(self, net):
    """``BaseModel.model_to_device`` that wraps CPU networks in DDP without ``device_ids`` (BasicSR passes
    ``torch.cuda.current_device()``, which fails without CUDA)."""
    from torch.nn.parallel import DataParallel, DistributedDataParallel

    net = net.to(self.device)
    if self.opt['dist']:
        device_ids = [torch.cuda.current_device()] if self.device.type == 'cuda' else None
        net = DistributedDataParallel(net, device_ids=device_ids,
                                      find_unused_parameters=self.opt.get('find_unused_parameters', False))
    elif self.opt['num_gpu'] > 1:
        net = DataParallel(net)
    return net


def patch_distributed_for_cpu():
    """Route BasicSR's ``init_dist`` (looked up in ``basicsr.utils.options`` by ``parse_options``) and
    ``BaseModel.model_to_device`` to the CUDA-optional versions above, so ``torchrun ... --launcher pytorch``
    trains on CPU with gloo as well as on GPUs with NCCL.

    Returns:
        bool: True if patched, False if the installed BasicSR needs neither.
    """
    import basicsr.utils.options
    from basicsr.models.base_model import BaseModel

    acted = False
    current = basicsr.utils.options.init_dist
    if current is not init_dist and 'cuda.set_device' in inspect.getsource(sys.modules[current.__module__]):
        ORIGINALS['basicsr.utils.options.init_dist'] = current
        basicsr.utils.options.init_dist = init_dist
        acted = True
    if BaseModel.model_to_device is not model_to_device and 'cuda.current_device' in inspect.getsource(
            BaseModel.model_to_device):
        ORIGINALS['basicsr.models.base_model.BaseModel.model_to_device'] = BaseModel.model_to_device
        BaseModel.model_to_device = model_to_device
        acted = True
    return acted


def patch_resumable_sampler():
    """BasicSR (1.4.2 and master) replays an interrupted epoch from its first batch with freshly seeded random
    generators, so a resumed run differs from an uninterrupted one. Build the training sampler as
    :class:`interir_plugin.utils.resume.ResumableSampler` (``basicsr.train.EnlargedSampler`` is looked up at call
    time by ``create_train_val_dataloader``), which :class:`UnfoldingRestorationModel` tells where to continue.

    Returns:
        bool: True if replaced, False if already done.
    """
    import basicsr.train

    from interir_plugin.utils.resume import ResumableSampler

    if basicsr.train.EnlargedSampler is ResumableSampler:
        return False
    ORIGINALS['basicsr.train.EnlargedSampler'] = basicsr.train.EnlargedSampler
    basicsr.train.EnlargedSampler = ResumableSampler
    return True


def apply():
    """Apply every shim that the installed BasicSR needs; idempotent. Returns :data:`APPLIED`."""
    if 'functional_tensor' not in APPLIED:
        APPLIED['functional_tensor'] = alias_functional_tensor()
    try:
        import basicsr  # noqa: F401
    except ImportError as err:
        raise ImportError(
            'interir_plugin needs BasicSR, which it does not install by itself so that it never replaces the '
            'one you have. Install it with `pip install "interir_plugin[basicsr]"` (BasicSR from PyPI) or '
            f'`pip install basicsr-fixed`. Import error: {err}') from err
    APPLIED['cpu_resume'] = patch_resume_state_loader() or APPLIED.get('cpu_resume', False)
    APPLIED['cpu_distributed'] = patch_distributed_for_cpu() or APPLIED.get('cpu_distributed', False)
    APPLIED['resumable_sampler'] = patch_resumable_sampler() or APPLIED.get('resumable_sampler', False)
    return APPLIED
