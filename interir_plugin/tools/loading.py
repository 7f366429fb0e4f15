"""Option files (and shipped models) to ready-to-run networks for the tools (infer, explain, profile), outside
BasicSR's pipelines.

A tool builds the network of an option file's ``network_g`` through :class:`UnfoldingRestorationModel` in test
mode, whatever the file's ``model_type``: that class loads ``path.pretrain_network_g`` (``weights_only``), pads
to the network's ``size_multiple`` and tiles / self-ensembles as ``val:`` says, and it accepts networks that
return one tensor, so BasicSR's own archs (SwinIR, RIDNet, EDSR, ...) run the same way. ``train:`` and
``datasets:`` are not read. No folder is created. Where a tool takes an option file it may take a shipped model,
``pretrained:<name>`` (:func:`model_options`; :mod:`interir_plugin.weights`).
"""
import contextlib
import copy
import os
import warnings

import torch
from basicsr.models import build_model

from interir_plugin.tools.options import load_option_file
from interir_plugin.weights import PREFIX, is_pretrained, shipped_options

#: ``network_g`` keys that hold the number of input channels, over the plugin's and BasicSR's archs.
_IN_CHANNEL_KEYS = ('num_in_ch', 'in_chans', 'in_channels', 'in_c', 'in_nc')
#: ``val:`` keys a tool passes on to the model (tiling and self-ensemble); the rest is about validation.
_INFERENCE_VAL_KEYS = ('tile', 'tile_overlap', 'self_ensemble')


def resolve_device(device='auto'):
    """``'auto'`` (CUDA if available, else CPU), ``'cpu'`` or ``'cuda[:i]'`` as a ``torch.device``.

    Args:
        device (str | torch.device): The device asked for. Default: 'auto'.

    Returns:
        torch.device: The device, with its index for ``cuda:i``; ``cuda`` alone is the current CUDA device.
    """
    if device == 'auto':
        return torch.device('cuda' if torch.cuda.is_available() else 'cpu')
    dev = torch.device(device)
    if dev.type == 'cuda':
        if not torch.cuda.is_available():
            raise ValueError(f'device {device!r} requested but CUDA is not available')
        count = torch.cuda.device_count()
        if dev.index is not None and dev.index >= count:
            raise ValueError(f'device {device!r} requested but this machine has {count} CUDA device(s): '
                             f'cuda:0 to cuda:{count - 1}')
    return dev


def device_scope(device):
    """A context in which BasicSR's ``torch.device('cuda')`` (models built with ``num_gpu`` > 0) is ``device``.

    BasicSR's models run on ``torch.device('cuda')``, which is the *current* CUDA device: without this, a tool
    asked for ``cuda:1`` would build and run BasicSR's pipelines on ``cuda:0``.

    Args:
        device (torch.device): From :func:`resolve_device`.

    Returns:
        contextlib.AbstractContextManager: ``torch.cuda.device(device)`` for a CUDA device, else a no-op context.
    """
    return torch.cuda.device(device) if device.type == 'cuda' else contextlib.nullcontext()


def input_channels(network_opt):
    """Input channels of a ``network_g`` mapping (the first of :data:`_IN_CHANNEL_KEYS` present, else 3)."""
    for key in _IN_CHANNEL_KEYS:
        if key in network_opt:
            return int(network_opt[key])
    return 3


def model_options(spec):
    """The options of a tool's model argument and a line saying which weights they load.

    Args:
        spec (str): An option file, or ``pretrained:<name>`` for a shipped model (its weights' SHA-256 is checked
            here: :func:`interir_plugin.weights.shipped_options`).

    Returns:
        tuple: ``(options, weights)``: the options (``network_g``, ``path``, ``val``; a shipped model's also
        ``name`` and ``shipped``) and e.g. ``'shipped InterIR-S: .../InterIR-S.pth (sha256 1a2b3c4d5e6f)'``.
    """
    if is_pretrained(spec):
        opt = shipped_options(spec[len(PREFIX):])
        shipped = opt['shipped']
        return opt, f'shipped {shipped["model"]}: {shipped["file"]} (sha256 {shipped["sha256"][:12]})'
    opt = load_option_file(spec)
    weights = (opt.get('path') or {}).get('pretrain_network_g')
    return opt, f'{spec}: {weights or "RANDOM weights (path.pretrain_network_g is not set)"}'


def inference_options(opt, device, tile=None, tile_overlap=None, self_ensemble=None, weights=True):
    """Test-mode options for :class:`UnfoldingRestorationModel` built from any option file's contents.

    The model is built on the CPU (``num_gpu: 0``: the weights are loaded there) and moved to the device by
    :func:`build_restorer`, so that nothing lands on ``cuda:0`` when another device is asked for.

    Args:
        opt (dict): Options as read by :func:`~interir_plugin.tools.options.load_option_file` (not modified).
        device (torch.device): Where the network runs (the options do not depend on it).
        tile (int, optional): Overrides ``val.tile``; 0 runs whole images. Default: None (keep the file's).
        tile_overlap (int, optional): Overrides ``val.tile_overlap``. Default: None (keep the file's).
        self_ensemble (bool, optional): Overrides ``val.self_ensemble``. Default: None (keep the file's).
        weights (bool): Keep ``path.pretrain_network_g``; False builds a randomly initialised network. Default: True.

    Returns:
        dict: Options for ``basicsr.models.build_model``.
    """
    val = {k: v for k, v in (opt.get('val') or {}).items() if k in _INFERENCE_VAL_KEYS}
    for key, value in (('tile', tile), ('tile_overlap', tile_overlap), ('self_ensemble', self_ensemble)):
        if value is not None:
            val[key] = None if key == 'tile' and value == 0 else value
    path = dict(opt.get('path') or {})
    if not weights:
        path['pretrain_network_g'] = None
    elif path.get('pretrain_network_g'):
        path['pretrain_network_g'] = os.path.expanduser(path['pretrain_network_g'])
    return {'name': opt.get('name', 'interir_tool'), 'model_type': 'UnfoldingRestorationModel',
            'network_g': copy.deepcopy(opt['network_g']), 'path': path, 'val': val, 'is_train': False,
            'dist': False, 'rank': 0, 'world_size': 1, 'num_gpu': 0}


def build_restorer(opt, device, option_path='option file', require_weights=False, **overrides):
    """Build :class:`UnfoldingRestorationModel` (test mode) for an option file's network.

    Args:
        opt (dict): Options as read by :func:`~interir_plugin.tools.options.load_option_file`.
        device (torch.device): Device the network and ``model.device`` are on (``cuda:i`` is honoured; BasicSR's
            own rule would put every CUDA model on the current device).
        option_path (str): The option file's name, for messages. Default: 'option file'.
        require_weights (bool): Raise if ``path.pretrain_network_g`` is unset instead of warning that the network
            is randomly initialised. Default: False.
        **overrides: ``tile``, ``tile_overlap``, ``self_ensemble`` as :func:`inference_options`.

    Returns:
        UnfoldingRestorationModel: The model; its bare network is ``model.get_bare_model(model.net_g)``.
    """
    if not (opt.get('path') or {}).get('pretrain_network_g'):
        message = (f'{option_path}: path.pretrain_network_g is not set, so {opt["network_g"]["type"]} runs with '
                   'RANDOM weights; its outputs mean nothing')
        if require_weights:
            raise ValueError(message)
        warnings.warn(message, stacklevel=2)
    model = build_model(inference_options(opt, device, **overrides))  # on the CPU, weights loaded
    model.net_g = model.net_g.to(device)
    model.device = device  # feed_data and the tools move inputs to model.device
    return model
