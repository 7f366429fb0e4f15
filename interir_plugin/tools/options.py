"""Option files: the one loader (:func:`load_option_file`) of every command and tool, and the check that runs before
BasicSR reads a file, so a typo fails at once with the file and key named, before any experiment folder is created or
renamed (importing this module means ``interir_plugin`` is imported, so the registries are filled). The deeper
checks stay where the knowledge is: datasets check their own keys and files, the model class its ``train``/``val``
keys, archs their argument values.
"""
import difflib
import inspect
import os

import yaml
from basicsr.utils.registry import ARCH_REGISTRY, DATASET_REGISTRY, MODEL_REGISTRY

#: top-level keys BasicSR's pipelines and models read (``dist``, ``rank`` ... are set by BasicSR itself).
TOP_LEVEL_KEYS = ('name', 'model_type', 'scale', 'num_gpu', 'manual_seed', 'datasets', 'network_g', 'network_d',
                  'path', 'train', 'val', 'logger', 'dist_params', 'find_unused_parameters', 'use_static_graph',
                  'is_train', 'dist', 'rank', 'world_size', 'auto_resume', 'root_path')
#: (section, key) pairs that must be positive ints when present, and those that must be non-negative ints.
POSITIVE_INTS = (('train', 'total_iter'), ('logger', 'print_freq'), ('logger', 'save_checkpoint_freq'),
                 ('val', 'val_freq'))
DATASET_POSITIVE_INTS = ('batch_size_per_gpu', 'gt_size', 'dataset_enlarge_ratio', 'total_batch_size')
#: dataset keys that only the training set may have.
TRAIN_ONLY_DATASET_KEYS = ('total_batch_size',)
DATASET_NON_NEGATIVE_INTS = ('num_worker_per_gpu',)
#: keys of ``dist_params``: BasicSR's (``backend``, ``port``; passed to ``init_dist`` under slurm) and the collective
#: timeout (:func:`interir_plugin.compat.dist_timeout_minutes`, read under every launcher).
DIST_PARAMS_KEYS = ('backend', 'port', 'timeout_minutes')


class OptionFileError(ValueError):
    """An option file that cannot be used (missing, not YAML, or failing :func:`check_option_file`), raised by
    :func:`interir_plugin.tools.pipelines.run_basicsr` before BasicSR starts; the message names the file and key."""


def _hint(key, known):
    close = difflib.get_close_matches(str(key), [str(k) for k in known], n=1)
    return f' (did you mean {close[0]!r}?)' if close else ''


def _is_int(value):
    return isinstance(value, int) and not isinstance(value, bool)


def load_option_file(path):
    """Read an option YAML file into a dict; errors name the file (and the line and column of a syntax error).

    Every option file (train, test, or one read by a tool) needs ``network_g``: a mapping with a ``type``.

    Args:
        path (str): Option file.

    Returns:
        dict: The options.
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f'option file not found: {path}')
    try:
        with open(path, encoding='utf-8') as f:
            opt = yaml.safe_load(f)
    except yaml.YAMLError as err:
        mark = getattr(err, 'problem_mark', None)
        where = f' line {mark.line + 1}, column {mark.column + 1}' if mark else ''
        raise ValueError(f'{path}:{where}: not valid YAML: {getattr(err, "problem", err)}') from err
    if not isinstance(opt, dict):
        raise ValueError(f'{path}: an option file must be a mapping of keys, got {type(opt).__name__}')
    net = opt.get('network_g')
    if not isinstance(net, dict) or 'type' not in net:
        raise ValueError(f'{path}: network_g must be a mapping with a "type" key (the network), got {net!r}')
    return opt


def write_option(path, opt, comment):
    """Write ``opt`` as an option YAML file under a ``# comment`` line (the folder is created); return ``path``."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, 'w', encoding='utf-8') as f:
        f.write(f'# {comment}\n')
        yaml.safe_dump(opt, f, sort_keys=False)
    return path


def _check_registered(path, what, name, registry):
    try:  # get(), not `in`: BasicSR also finds names registered with a suffix (SRVGGNetCompact_basicsr)
        return registry.get(name)
    except KeyError:
        raise ValueError(f'{path}: {what} {name!r} is not registered{_hint(name, registry.keys())}') from None


def _check_kwargs(path, section, cls, kwargs):
    params = inspect.signature(cls.__init__).parameters
    if any(p.kind == p.VAR_KEYWORD for p in params.values()):
        return
    known = [n for n in params if n != 'self']
    for key in kwargs:
        if key not in known:
            raise ValueError(f'{path}: unknown option {section}.{key} for {cls.__name__}{_hint(key, known)}; '
                             f'it accepts {", ".join(known)}')


def _check_dist_params(path, params):
    """``dist_params``: a mapping of ``backend`` (str), ``port`` (int) and ``timeout_minutes`` (positive number)."""
    if params is None:
        return
    if not isinstance(params, dict):
        raise ValueError(f'{path}: dist_params must be a mapping, got {params!r}')
    for key in params:
        if key not in DIST_PARAMS_KEYS:
            raise ValueError(f'{path}: unknown option dist_params.{key}{_hint(key, DIST_PARAMS_KEYS)}; '
                             f'allowed: {", ".join(DIST_PARAMS_KEYS)}')
    timeout = params.get('timeout_minutes')
    if timeout is not None and (isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not timeout > 0):
        raise ValueError(f'{path}: dist_params.timeout_minutes must be a positive number, got {timeout!r}')
    port = params.get('port')
    if port is not None and not (_is_int(port) and 0 < port < 65536):
        raise ValueError(f'{path}: dist_params.port must be an int in 1..65535, got {port!r}')


def check_option_file(path, is_train):
    """Validate the parts of an option file that BasicSR itself never checks; raise ``ValueError`` naming the file
    and the key at fault.

    Args:
        path (str): Option YAML.
        is_train (bool): ``interir train`` (True) or ``interir test`` (False).

    Returns:
        dict: The parsed options.
    """
    opt = load_option_file(path)
    for key in opt:
        if key not in TOP_LEVEL_KEYS:
            raise ValueError(f'{path}: unknown top-level option {key!r}{_hint(key, TOP_LEVEL_KEYS)}')
    for key in ('name', 'model_type', 'network_g', 'datasets') + (('train',) if is_train else ()):
        if key not in opt:
            raise ValueError(f'{path}: required option {key!r} is missing')
    _check_registered(path, 'model_type', opt['model_type'], MODEL_REGISTRY)
    for section in ('network_g', 'network_d'):
        net = opt.get(section)
        if net is None:
            continue
        if not isinstance(net, dict) or 'type' not in net:
            raise ValueError(f'{path}: {section} must be a mapping with a "type" key, got {net!r}')
        cls = _check_registered(path, f'{section}.type', net['type'], ARCH_REGISTRY)
        _check_kwargs(path, section, cls, {k: v for k, v in net.items() if k != 'type'})
    num_gpu = opt.get('num_gpu', 'auto')
    if num_gpu != 'auto' and not (_is_int(num_gpu) and num_gpu >= 0):
        raise ValueError(f'{path}: num_gpu must be "auto" or a non-negative int, got {num_gpu!r}')
    for section, key in POSITIVE_INTS:
        value = (opt.get(section) or {}).get(key)
        if value is not None and not (_is_int(value) and value > 0):
            raise ValueError(f'{path}: {section}.{key} must be a positive int, got {value!r}')
    _check_dist_params(path, opt.get('dist_params'))
    if not isinstance(opt['datasets'], dict) or not opt['datasets']:
        raise ValueError(f'{path}: datasets must be a non-empty mapping of phases (train, val_1, test_1, ...)')
    for phase, dataset in opt['datasets'].items():
        if phase.split('_')[0] not in ('train', 'val', 'test'):
            raise ValueError(f'{path}: datasets.{phase}: a phase name starts with train, val or test')
        if not isinstance(dataset, dict) or 'type' not in dataset:
            raise ValueError(f'{path}: datasets.{phase} must be a mapping with a "type" key')
        _check_registered(path, f'datasets.{phase}.type', dataset['type'], DATASET_REGISTRY)
        for key in DATASET_POSITIVE_INTS + DATASET_NON_NEGATIVE_INTS:
            value = dataset.get(key)
            low = 1 if key in DATASET_POSITIVE_INTS else 0
            if value is not None and not (_is_int(value) and value >= low):
                kind = 'a positive' if low else 'a non-negative'
                raise ValueError(f'{path}: datasets.{phase}.{key} must be {kind} int, got {value!r}')
        for key in TRAIN_ONLY_DATASET_KEYS:
            if phase != 'train' and key in dataset:
                raise ValueError(f'{path}: datasets.{phase}.{key} applies to the training set only')
        for key in ('pin_memory', 'persistent_workers'):
            if key in dataset and not isinstance(dataset[key], bool):
                raise ValueError(f'{path}: datasets.{phase}.{key} must be true or false, got {dataset[key]!r}')
        if dataset.get('persistent_workers') and (phase != 'train' or not dataset.get('num_worker_per_gpu')):
            # BasicSR's validation loaders have no workers, and torch's DataLoader refuses persistent ones then
            raise ValueError(f'{path}: datasets.{phase}.persistent_workers needs worker processes: the training set '
                             'with num_worker_per_gpu > 0 (BasicSR gives validation and test loaders none)')
    if is_train and 'train' not in opt['datasets']:
        raise ValueError(f'{path}: datasets.train is required for training')
    return opt
