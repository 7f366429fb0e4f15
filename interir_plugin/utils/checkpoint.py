"""Checkpoints in and out: the one place the plugin loads files with torch, and the atomic ``torch.save`` beside it.

Loading never executes code from a file (``weights_only=True``) and every error names the file. This module imports
torch and the standard library only, so :mod:`interir_plugin.compat` may use it before BasicSR is imported.
"""
import glob
import logging
import os
import os.path as osp
import uuid
from collections import OrderedDict

import torch
from torch.nn.modules.utils import consume_prefix_in_state_dict_if_present

#: Prefix that ``DataParallel`` / ``DistributedDataParallel`` put before every parameter name.
WRAPPER_PREFIX = 'module.'


def _logger():
    return logging.getLogger('basicsr')  # BasicSR's root logger once its pipelines configured it


def load_checkpoint(path, map_location='cpu', what='checkpoint'):
    """Load a checkpoint or training state with ``weights_only=True``; errors name the file.

    Args:
        path (str): File to load.
        map_location: Where tensors go (a device, or a function as torch's loader takes). Default: 'cpu'.
        what (str): What the file is, for messages (``checkpoint``, ``training state``). Default: 'checkpoint'.

    Returns:
        The loaded object (tensors and plain containers only).
    """
    if not osp.isfile(path):
        raise FileNotFoundError(f'{what} not found: {path}')
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # truncated zip, bad pickle, refused object type: the type varies with the damage
        raise RuntimeError(f'cannot load {what} {path}: {type(err).__name__}: {err}. The file is truncated, corrupt, '
                           'or holds objects other than tensors and plain containers (refused for safety).') from err


class CheckpointMismatchError(RuntimeError, ValueError):
    """A checkpoint whose keys or shapes do not fit the network (a ``RuntimeError`` as ``load_state_dict``'s, and a
    ``ValueError``: it is bad input, reported in one line by the ``interir`` tools)."""


def strip_wrapper_prefix(state):
    """A copy of ``state`` (a mapping or ``(key, value)`` pairs) with the DataParallel/DDP ``module.`` prefix removed
    from every key that has it (torch's ``consume_prefix_in_state_dict_if_present``)."""
    state = OrderedDict(state)
    consume_prefix_in_state_dict_if_present(state, WRAPPER_PREFIX)
    return state


def _is_state_dict(obj):
    return isinstance(obj, dict) and bool(obj) and all(torch.is_tensor(v) for v in obj.values())


def extract_state_dict(ckpt, param_key, path, fallback='params'):
    """The network weights in a loaded checkpoint, ``module.`` prefixes stripped.

    Rule: ``ckpt[param_key]`` if present; else ``ckpt[fallback]`` (as BasicSR, a missing ``params_ema`` falls back
    to ``params``; logged); else ``ckpt`` itself if it is a bare state dict of tensors (what
    ``torch.save(net.state_dict())`` writes); else ``KeyError`` listing what the file holds.

    Args:
        ckpt (dict): Loaded checkpoint.
        param_key (str | None): Entry holding the weights (``params``, ``params_ema``, ``state_dict`` for official
            DGUNet checkpoints), or None when ``ckpt`` is the state dict itself.
        path (str): File name, for error messages.
        fallback (str | None): Entry used when ``param_key`` is absent; None for no fallback. Default: 'params'.

    Returns:
        OrderedDict: Parameter name -> tensor.
    """
    if param_key is not None:
        if isinstance(ckpt, dict) and param_key in ckpt:
            ckpt = ckpt[param_key]
        elif isinstance(ckpt, dict) and fallback is not None and fallback in ckpt:
            _logger().info(f'{path}: no {param_key!r} entry, loading {fallback!r}')
            param_key, ckpt = fallback, ckpt[fallback]
        elif not _is_state_dict(ckpt):
            held = sorted(ckpt)[:8] if isinstance(ckpt, dict) else type(ckpt).__name__
            raise KeyError(f'checkpoint {path} has no {param_key!r} entry (path.param_key_g); it holds {held}')
    if not _is_state_dict(ckpt):
        raise ValueError(f'checkpoint {path}: entry {param_key!r} is not a state dict of tensors')
    return strip_wrapper_prefix(ckpt)


def compare_state_dicts(own, state):
    """What keeps ``state`` from loading strictly into a network whose state dict is ``own``.

    Returns:
        dict: ``missing keys``, ``unexpected keys`` and ``shape mismatches`` (``'key: checkpoint (..) vs network
        (..)'``), each a list.
    """
    return {'missing keys': [k for k in own if k not in state],
            'unexpected keys': [k for k in state if k not in own],
            'shape mismatches': [f'{k}: checkpoint {tuple(state[k].shape)} vs network {tuple(own[k].shape)}'
                                 for k in own if k in state and state[k].shape != own[k].shape]}


def load_weights(net, path, param_key='params', strict=True, fallback='params', hint=None):
    """Load the weights of checkpoint ``path`` into ``net`` (a DataParallel/DDP wrapper is unwrapped).

    Args:
        net (nn.Module): Network.
        path (str): Checkpoint file.
        param_key (str | None): Entry holding the weights; see :func:`extract_state_dict`. Default: 'params'.
        strict (bool): Require identical keys and shapes (else :class:`CheckpointMismatchError` naming the file and
            the keys); if False, missing/unexpected keys and keys whose shape differs are skipped with a warning.
            Default: True.
        fallback (str | None): As :func:`extract_state_dict`. Default: 'params'.
        hint (callable | None): ``hint(state) -> str``, appended to the mismatch error (what to check). Default: None.

    Returns:
        nn.Module: The bare ``net``, loaded.
    """
    if isinstance(net, (torch.nn.DataParallel, torch.nn.parallel.DistributedDataParallel)):
        net = net.module
    state = extract_state_dict(load_checkpoint(path), param_key, path, fallback)
    problems = compare_state_dicts(net.state_dict(), state)
    if strict and any(problems.values()):
        details = '; '.join(f'{title} ({len(keys)}): {", ".join(keys[:8])}{" ..." if len(keys) > 8 else ""}'
                            for title, keys in problems.items() if keys)
        raise CheckpointMismatchError(f'checkpoint {path} does not fit {type(net).__name__}: {details}.'
                                      + (f' {hint(state)}' if hint else ''))
    for k in [m.split(':')[0] for m in problems['shape mismatches']]:
        state.pop(k)
    for title, keys in problems.items():
        if keys:
            _logger().warning(f'Loading {path}: skipping {len(keys)} {title}: {keys[:8]}')
    net.load_state_dict(state, strict=strict)
    return net


def atomic_torch_save(obj, path, retries=3):
    """``torch.save`` that never leaves a partial file at ``path``.

    The object goes to a hidden temporary file in the same folder, which is flushed and fsynced, then renamed
    over ``path`` with ``os.replace`` (atomic on POSIX and Windows); the folder is fsynced so the rename
    survives a power cut. A process killed mid-write leaves ``path`` as it was (plus a stale temporary file,
    removed by the next save of the same name).

    Args:
        obj: What to save.
        path (str): Destination.
        retries (int): Attempts on ``OSError`` (network file systems fail transiently). Default: 3.
    """
    folder, name = osp.split(osp.abspath(path))
    os.makedirs(folder, exist_ok=True)
    for stale in glob.glob(osp.join(glob.escape(folder), f'.{glob.escape(name)}.*.tmp')):
        try:
            os.remove(stale)
        except OSError:
            pass
    for attempt in range(1, retries + 1):
        tmp = osp.join(folder, f'.{name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp')
        try:
            with open(tmp, 'xb') as f:
                torch.save(obj, f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
            break
        except OSError as err:
            if osp.exists(tmp):
                os.remove(tmp)
            if attempt == retries:
                raise OSError(f'cannot save {path} after {retries} attempts: {err}') from err
            _logger().warning(f'Saving {path} failed ({err}); retrying')
    if hasattr(os, 'O_DIRECTORY'):  # POSIX: make the rename durable
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def bare_state_dict(net):
    """``net``'s state dict on the CPU, without a wrapper's ``module.`` prefix (what a checkpoint holds)."""
    if isinstance(net, (torch.nn.DataParallel, torch.nn.parallel.DistributedDataParallel)):
        net = net.module
    return strip_wrapper_prefix((k, v.cpu()) for k, v in net.state_dict().items())
