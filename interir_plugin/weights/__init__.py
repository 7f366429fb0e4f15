"""Weights that ship inside the package: the manifest (``manifest.yml`` beside this file), its checks, and
:func:`load_shipped`.

A shipped model is a manifest entry (``description``, ``file``, ``sha256``, ``dtype``, ``param_key``, ``network_g``
and optionally ``recipe``, ``iterations``, ``train_seconds``, ``tile``, ``tile_overlap``) and its weights file in
the same folder. The folder is this package's, or the one named by the environment variable :data:`ENV_VAR` (a
folder with its own ``manifest.yml``: for tests, and for trying weights before they ship). Before a file is loaded
its SHA-256 is compared with the manifest's, so a truncated or corrupt file is refused with both hashes named; it
is then loaded by the plugin's one checkpoint loader (:func:`interir_plugin.utils.checkpoint.load_weights`,
``weights_only=True``). A file stored in float16 (half the size) is loaded into the float32 network: loading a
state dict copies every tensor into the network's own parameters, which casts it. A model without its file or
without a hash is never replaced by random weights: loading it raises an error that says so.

Tools name a shipped model as ``pretrained:<name>`` (:data:`PREFIX`) wherever they take an option file.
"""
import copy
import hashlib
import os

import torch
import yaml
from basicsr.archs import build_network

from interir_plugin.utils.checkpoint import load_weights

__all__ = ['DEFAULT_MODEL', 'ENV_VAR', 'MANIFEST', 'MAX_FILE_BYTES', 'PREFIX', 'file_sha256', 'is_pretrained',
           'load_shipped', 'read_manifest', 'shipped_entry', 'shipped_names', 'shipped_options', 'verified_weights',
           'weights_dir']

#: Environment variable naming a folder that replaces the package's (its ``manifest.yml`` and weights files).
ENV_VAR = 'INTERIR_WEIGHTS_DIR'
#: File name of the manifest in the weights folder.
MANIFEST = 'manifest.yml'
#: How tools name a shipped model in place of an option file: ``pretrained:InterIR-S``.
PREFIX = 'pretrained:'
#: The model ``interir infer`` uses when no option file is given.
DEFAULT_MODEL = 'InterIR-S'
#: Largest weights file the package ships (bytes).
MAX_FILE_BYTES = 5_000_000
#: Keys every manifest entry has.
REQUIRED_KEYS = ('description', 'file', 'sha256', 'dtype', 'param_key', 'network_g')
#: Keys an entry may have besides :data:`REQUIRED_KEYS`.
OPTIONAL_KEYS = ('recipe', 'iterations', 'train_seconds', 'tile', 'tile_overlap')
#: Tile overlap when an entry names a tile side but no overlap (the model class's default).
DEFAULT_TILE_OVERLAP = 32
#: Stored precisions of a weights file.
DTYPES = {'float16': torch.float16, 'float32': torch.float32}


def weights_dir():
    """The folder of the manifest and the weights: ``$INTERIR_WEIGHTS_DIR`` if set, else this package's folder."""
    return os.path.abspath(os.environ.get(ENV_VAR) or os.path.dirname(__file__))


def _check_entry(name, entry, path):
    """Raise ``ValueError`` naming the manifest, the model and the key unless ``entry`` is a valid entry."""
    if not isinstance(entry, dict):
        raise ValueError(f'{path}: entry {name!r} must be a mapping, got {entry!r}')
    for key in REQUIRED_KEYS:
        if key not in entry:
            raise ValueError(f'{path}: entry {name!r} has no {key!r}')
    unknown = sorted(set(entry) - set(REQUIRED_KEYS) - set(OPTIONAL_KEYS))
    if unknown:
        raise ValueError(f'{path}: entry {name!r} has unknown keys {unknown}; allowed: '
                         f'{", ".join(REQUIRED_KEYS + OPTIONAL_KEYS)}')
    if not isinstance(entry['network_g'], dict) or 'type' not in entry['network_g']:
        raise ValueError(f'{path}: {name}.network_g must be a mapping with a "type" key, got {entry["network_g"]!r}')
    if entry['dtype'] not in DTYPES:
        raise ValueError(f'{path}: {name}.dtype must be one of {sorted(DTYPES)}, got {entry["dtype"]!r}')
    if os.path.basename(str(entry['file'])) != entry['file']:
        raise ValueError(f'{path}: {name}.file must be a file name in the weights folder, got {entry["file"]!r}')


def read_manifest(folder=None):
    """The manifest as ``{model name: entry}`` (every entry checked).

    Args:
        folder (str | None): Weights folder. Default: None (:func:`weights_dir`).

    Returns:
        dict: Model name -> entry (a dict with the keys of :data:`REQUIRED_KEYS` and any of :data:`OPTIONAL_KEYS`).
    """
    path = os.path.join(folder or weights_dir(), MANIFEST)
    if not os.path.isfile(path):
        raise FileNotFoundError(f'manifest of the shipped weights not found: {path}'
                                + (f' (${ENV_VAR} is set to {os.environ[ENV_VAR]})' if os.environ.get(ENV_VAR) else ''))
    with open(path, encoding='utf-8') as f:
        try:
            manifest = yaml.safe_load(f) or {}
        except yaml.YAMLError as err:
            raise ValueError(f'{path}: not valid YAML: {err}') from err
    if not isinstance(manifest, dict):
        raise ValueError(f'{path}: the manifest must map model names to entries, got {type(manifest).__name__}')
    for name, entry in manifest.items():
        _check_entry(name, entry, path)
    return manifest


def shipped_names(folder=None):
    """Names of the shipped models, in manifest order."""
    return list(read_manifest(folder))


def shipped_entry(name, folder=None):
    """The manifest entry of ``name`` (a copy); ``ValueError`` listing the shipped models for another name."""
    manifest = read_manifest(folder)
    if name not in manifest:
        raise ValueError(f'no shipped model {name!r}; shipped: {", ".join(manifest) or "none"} '
                         f'({os.path.join(folder or weights_dir(), MANIFEST)})')
    return copy.deepcopy(manifest[name])


def is_pretrained(spec):
    """Whether a tool's model argument names a shipped model (``pretrained:<name>``) rather than an option file."""
    return isinstance(spec, str) and spec.startswith(PREFIX)


def file_sha256(path, chunk=1 << 20):
    """Hex SHA-256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, 'rb') as f:
        for block in iter(lambda: f.read(chunk), b''):
            digest.update(block)
    return digest.hexdigest()


def verified_weights(name, folder=None):
    """The entry and weights file of a shipped model, after checking the file's SHA-256 against the manifest.

    Args:
        name (str): Shipped model name (:func:`shipped_names`).
        folder (str | None): Weights folder. Default: None (:func:`weights_dir`).

    Returns:
        tuple: ``(entry, path, sha256)``.

    Raises:
        FileNotFoundError: The weights file is absent (the package was installed without it, or the model is not
            released yet).
        ValueError: The manifest has no hash for it, or the file's hash differs (truncated or corrupt file).
    """
    entry = shipped_entry(name, folder)
    path = os.path.join(folder or weights_dir(), entry['file'])
    if not os.path.isfile(path):
        raise FileNotFoundError(f'the weights of the shipped model {name} are not installed: {path} is absent. '
                                'Reinstall interir_plugin, or give an option file with your own weights (-opt X.yml)')
    expected = entry['sha256']
    if not expected:
        raise ValueError(f'the manifest has no sha256 for {name} ({path}): the weights are not released; '
                         '`interir ship` packs a checkpoint and records its hash')
    actual = file_sha256(path)
    if actual != str(expected).lower():
        raise ValueError(f'shipped weights {path} ({os.path.getsize(path)} bytes) have SHA-256 {actual}, but the '
                         f'manifest expects {expected} for {name}: the file is truncated or corrupt (or not the '
                         'released one); it is not loaded. Reinstall interir_plugin')
    return entry, path, actual


def shipped_options(name, folder=None):
    """Options that build a shipped model like an option file's (``network_g``, ``path``, ``val`` tiling), hash
    checked: what :func:`interir_plugin.tools.loading.build_restorer` and BasicSR's test pipeline read.

    Args:
        name (str): Shipped model name.
        folder (str | None): Weights folder. Default: None (:func:`weights_dir`).

    Returns:
        dict: ``name`` (``<model>@<first 8 hex digits of the hash>``: results of other weights never mix),
        ``network_g``, ``path`` (``pretrain_network_g``, ``param_key_g``, ``strict_load_g``), ``val`` (``tile``,
        ``tile_overlap``) and ``shipped`` (``model``, ``file``, ``sha256``, ``iterations``, ``train_seconds``).
    """
    entry, path, sha = verified_weights(name, folder)
    overlap = entry.get('tile_overlap')
    return {'name': f'{name}@{sha[:8]}', 'network_g': entry['network_g'],
            'path': {'pretrain_network_g': path, 'param_key_g': entry['param_key'], 'strict_load_g': True},
            'val': {'tile': entry.get('tile'), 'tile_overlap': DEFAULT_TILE_OVERLAP if overlap is None else overlap},
            'shipped': {'model': name, 'file': path, 'sha256': sha, 'iterations': entry.get('iterations'),
                        'train_seconds': entry.get('train_seconds')}}


def load_shipped(name=DEFAULT_MODEL, device='cpu', folder=None):
    """Build a shipped model's network and load its weights (hash checked first; ``weights_only=True``).

    Args:
        name (str): Shipped model name. Default: :data:`DEFAULT_MODEL`.
        device (str | torch.device): Where the network goes. Default: 'cpu'.
        folder (str | None): Weights folder. Default: None (:func:`weights_dir`).

    Returns:
        nn.Module: The network in eval mode, float32 parameters (a float16 file is cast on loading).
    """
    entry, path, _ = verified_weights(name, folder)
    net = build_network(copy.deepcopy(entry['network_g']))
    load_weights(net, path, entry['param_key'], strict=True, fallback=None)  # copies (and casts) into float32
    return net.to(torch.device(device)).eval()
