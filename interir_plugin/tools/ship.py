"""Pack a training checkpoint as a shipped model's weights file (``interir ship``, for maintainers).

The checkpoint is loaded by the plugin's one loader (``weights_only=True``) into the network the manifest names
(strictly: a checkpoint of another network is refused with the keys at fault), the weights are written in the
entry's precision (float16 halves the file; float32 keeps it exact) under the entry's ``param_key`` into the weights
folder (:func:`interir_plugin.weights.weights_dir`), atomically, and the manifest's ``sha256`` and ``dtype`` lines of
that entry are rewritten in place (comments and the other entries are kept); ``iterations`` and ``train_seconds``
too when given. The file is then loaded back through :func:`interir_plugin.weights.load_shipped`, the path users
take, and its output compared with the checkpoint's on a fixed input.
"""
import copy
import io
import os
import re

import torch
from basicsr.archs import build_network

from interir_plugin.utils.checkpoint import atomic_torch_save, bare_state_dict, load_weights
from interir_plugin.weights import (
    DEFAULT_MODEL,
    DTYPES,
    MANIFEST,
    MAX_FILE_BYTES,
    file_sha256,
    load_shipped,
    read_manifest,
    shipped_entry,
    weights_dir,
)

#: Side of the fixed input on which the packed network's output is compared with the checkpoint's.
CHECK_SIDE = 64


def _scalar(value):
    """``value`` as a YAML scalar: None as ``~``, strings quoted (a hash of digits alone must stay a string)."""
    if value is None:
        return '~'
    return f"'{value}'" if isinstance(value, str) else repr(value)


def set_manifest_fields(name, fields, folder=None):
    """Rewrite the lines ``  <key>: <value>`` of entry ``name`` in the manifest, keeping everything else.

    Args:
        name (str): Model name: a top-level key written plainly (``InterIR-S:``).
        fields (dict): ``{key: value}``; each key must already be a line of the entry; values are written as YAML
            scalars (:func:`_scalar`).
        folder (str | None): Weights folder. Default: None (:func:`~interir_plugin.weights.weights_dir`).
    """
    path = os.path.join(folder or weights_dir(), MANIFEST)
    with open(path, encoding='utf-8') as f:
        lines = f.read().splitlines(keepends=True)
    start = next((i for i, line in enumerate(lines) if re.match(rf'{re.escape(name)}:\s*(#.*)?$', line)), None)
    if start is None:
        raise ValueError(f'{path}: no top-level line "{name}:" (write the entry unquoted to let interir ship edit it)')
    end = next((i for i in range(start + 1, len(lines)) if re.match(r'[^\s#]', lines[i])), len(lines))
    for key, value in fields.items():
        at = next((i for i in range(start + 1, end) if re.match(rf'  {re.escape(key)}:', lines[i])), None)
        if at is None:
            raise ValueError(f'{path}: entry {name} has no line "  {key}: ..." to set')
        lines[at] = f'  {key}: {_scalar(value)}\n'
    with open(path, 'w', encoding='utf-8') as f:
        f.writelines(lines)
    entry = read_manifest(folder)[name]  # the file still parses and says what was written
    wrong = {k: entry[k] for k, v in fields.items() if entry[k] != v}
    if wrong:
        raise RuntimeError(f'{path}: after editing, entry {name} reads {wrong} instead of {fields}')


def _fixed_input(channels):
    """A deterministic smooth test image (gradients and a few discs), ``1 x channels x CHECK_SIDE x CHECK_SIDE``."""
    ramp = torch.linspace(0, 1, CHECK_SIDE)
    y, x = torch.meshgrid(ramp, ramp, indexing='ij')
    planes = [0.2 + 0.6 * x, 0.2 + 0.6 * y, 0.5 + 0.4 * torch.sin(6 * (x + y))]
    img = torch.stack([planes[c % 3] for c in range(channels)])
    return img.clamp(0, 1)[None]


def _final_output(net, x):
    with torch.no_grad():
        out = net(x)
    return (out[-1] if isinstance(out, (list, tuple)) else out).float()


def ship(checkpoint, name=DEFAULT_MODEL, param_key='params', dtype=None, iterations=None, train_seconds=None,
         folder=None):
    """Write a shipped model's weights file from a training checkpoint and record its hash in the manifest.

    Args:
        checkpoint (str): BasicSR checkpoint (``experiments/<run>/models/net_g_latest.pth``) or a bare state dict.
        name (str): Manifest entry. Default: :data:`~interir_plugin.weights.DEFAULT_MODEL`.
        param_key (str | None): Entry of the checkpoint holding the weights (``params``, ``params_ema``); None for a
            bare state dict. Default: 'params'.
        dtype (str | None): ``float16`` or ``float32``; None keeps the entry's ``dtype``. Default: None.
        iterations (int | None): Training iterations of the run, recorded in the manifest. Default: None (unchanged).
        train_seconds (float | None): Its training seconds, recorded. Default: None (unchanged).
        folder (str | None): Weights folder. Default: None (:func:`~interir_plugin.weights.weights_dir`).

    Returns:
        dict: ``file``, ``sha256``, ``bytes``, ``dtype`` and ``max_output_change`` (largest absolute difference, on
        a [0, 1] scale, between the packed network's output and the checkpoint's on a fixed 64 x 64 input).
    """
    entry = shipped_entry(name, folder)
    dtype = dtype or entry['dtype']
    if dtype not in DTYPES:
        raise ValueError(f'ship: dtype must be one of {sorted(DTYPES)}, got {dtype!r}')
    net = build_network(copy.deepcopy(entry['network_g'])).eval()
    load_weights(net, checkpoint, param_key, strict=True, fallback=None)  # refuses a checkpoint of another network
    state = {k: v.to(DTYPES[dtype]) if v.is_floating_point() else v for k, v in bare_state_dict(net).items()}
    buffer = io.BytesIO()
    torch.save({entry['param_key']: state}, buffer)
    if buffer.tell() > MAX_FILE_BYTES:
        raise ValueError(f'ship: {name} in {dtype} takes {buffer.tell()} bytes, over the {MAX_FILE_BYTES} a shipped '
                         'file may take' + (' (try --dtype float16)' if dtype != 'float16' else ''))
    path = os.path.join(folder or weights_dir(), entry['file'])
    atomic_torch_save({entry['param_key']: state}, path)
    sha = file_sha256(path)
    fields = {'sha256': sha, 'dtype': dtype}
    fields.update({k: v for k, v in (('iterations', iterations), ('train_seconds', train_seconds)) if v is not None})
    set_manifest_fields(name, fields, folder)
    shipped = load_shipped(name, 'cpu', folder)
    x = _fixed_input(int(entry['network_g'].get('num_in_ch', 3)))
    change = float((_final_output(shipped, x) - _final_output(net, x)).abs().max())
    return {'file': path, 'sha256': sha, 'bytes': os.path.getsize(path), 'dtype': dtype, 'max_output_change': change}
