"""``interir bench``: BasicSR's test pipeline for several option files, gathered into one leaderboard.

For every option file, BasicSR's ``test_pipeline`` runs with ``model_type`` set to
:class:`UnfoldingRestorationModel`, whatever the file says: that class accepts networks that return one tensor
(BasicSR's SwinIR, RIDNet, ...) as well as stage lists, and it writes the per-label metrics CSV
``results/<name>/metrics/<dataset>_<name>.csv`` that the leaderboard reads, so zoo models get per-label numbers
computed exactly like the plugin's. Existing CSVs are reused unless ``rerun``. Parameters and multiply-adds
come from :func:`interir_plugin.utils.complexity.model_complexity` at 3x256x256, latency from
:func:`interir_plugin.tools.profile.measure_latency` at 1x3x256x256 on the chosen device (random weights: cost
does not depend on them). The degraded input itself is scored as a baseline row (PSNR/SSIM of LQ against GT,
with the option file's ``val.metrics``). With a PSNR metric every row also has the harm rate (``harm``: the share of
images the model made more than 0.5 dB worse than its input; 0 for the input row).

A shipped model is a row like an option file: ``pretrained:<name>`` (:mod:`interir_plugin.weights`, its SHA-256
checked) becomes a test option file ``<out>/options/test_<name>.yml`` named ``<name>@<hash prefix>`` (so results of
other weights are never reused for it), scored on the datasets of ``data`` (:func:`data_blocks`: CDD-11-layout
folders or ``PROTOCOL:SPLIT``, with :data:`DEFAULT_METRICS`) or, without ``data``, on the datasets and
``val.metrics`` of the call's first option file.
"""
import copy
import os
import re

import torch
from basicsr.archs import build_network
from basicsr.data import build_dataset
from basicsr.metrics import calculate_metric
from basicsr.utils import tensor2img
from tqdm import tqdm

from interir_plugin.tools import leaderboard
from interir_plugin.tools.console import route_basicsr_log
from interir_plugin.tools.loading import device_scope, input_channels, resolve_device
from interir_plugin.tools.options import load_option_file, write_option
from interir_plugin.tools.pipelines import run_basicsr
from interir_plugin.tools.profile import example_input, measure_latency
from interir_plugin.utils.complexity import model_complexity
from interir_plugin.utils.metrics import HARM, label_summary, psnr_metric
from interir_plugin.weights import PREFIX, is_pretrained, shipped_options

#: Input of the cost columns (C, H, W); C is replaced by the network's input channels.
COST_INPUT = (3, 256, 256)
#: Metrics of datasets given as ``data`` (BasicSR's, RGB, no border crop; the demo's).
DEFAULT_METRICS = {'psnr': {'type': 'calculate_psnr', 'crop_border': 0, 'test_y_channel': False},
                   'ssim': {'type': 'calculate_ssim', 'crop_border': 0, 'test_y_channel': False}}


def scored_datasets(opt, option_path):
    """The option file's datasets in BasicSR's test order (sorted keys), each with its ``phase`` set as BasicSR.

    Args:
        opt (dict): Options.
        option_path (str): For messages.

    Returns:
        list[dict]: Dataset options (copies).
    """
    datasets = opt.get('datasets')
    if not isinstance(datasets, dict) or not datasets:
        raise ValueError(f'{option_path}: a test option file needs datasets: {{test_1: {{...}}}}')
    out = []
    for key, ds in sorted(datasets.items()):
        ds = dict(ds)
        ds['phase'] = key.split('_')[0]
        if 'name' not in ds:
            raise ValueError(f'{option_path}: datasets.{key} has no name')
        out.append(ds)
    if not (opt.get('val') or {}).get('metrics'):
        raise ValueError(f'{option_path}: val.metrics is required to score the test datasets')
    return out


def _cdd11_folder(root):
    """The ``cdd11`` entry of a CDD-11-layout folder: its label folders among the 11 categories."""
    from interir_plugin.data.degradations import CDD11_CATEGORIES

    labels = [c for c in CDD11_CATEGORIES if os.path.isdir(os.path.join(root, c))]
    if not os.path.isdir(os.path.join(root, 'clear')) or not labels:
        raise ValueError(f'--data {root}: a CDD-11-layout folder holds clear/ and label folders '
                         f'({", ".join(CDD11_CATEGORIES)}); found {sorted(os.listdir(root))}')
    return {'root': root, **({} if len(labels) == len(CDD11_CATEGORIES) else {'categories': labels})}


def data_blocks(specs):
    """Test dataset blocks of ``data`` specs: a CDD-11-layout folder (``clear/`` + label folders, the labels present
    are scored; named after the folder) or ``PROTOCOL:SPLIT`` (a protocol of ``datasets_meta/`` or a protocol file,
    at its ``default_root`` relative to the current folder; named ``<protocol>_<split>``).

    Args:
        specs (list[str]): The specs.

    Returns:
        list[dict]: ``MultiDegradationPairedDataset`` blocks.
    """
    from interir_plugin.data.sources import load_protocol

    blocks = []
    for spec in specs:
        block = {'type': 'MultiDegradationPairedDataset', 'io_backend': {'type': 'disk'}}
        if os.path.isdir(spec):
            block.update(name=os.path.basename(os.path.normpath(spec)), cdd11=_cdd11_folder(spec))
        elif ':' in spec:
            protocol, split = spec.rsplit(':', 1)
            load_protocol(protocol, None, split)  # an unknown protocol or split fails here, naming what exists
            name = os.path.splitext(os.path.basename(protocol))[0]
            block.update(name=f'{name}_{split}', protocol=protocol, protocol_split=split)
        else:
            raise ValueError(f'--data {spec}: neither a folder (CDD-11 layout) nor PROTOCOL:SPLIT '
                             '(e.g. minicdd_loro:test)')
        blocks.append(block)
    names = [b['name'] for b in blocks]
    if len(set(names)) != len(names):
        raise ValueError(f'--data: two datasets would have the same name: {names}')
    return blocks


def pretrained_option_file(spec, out_dir, datasets, metrics):
    """Write the test option file of a shipped model (``pretrained:<name>``) on ``datasets``; return its path.

    Args:
        spec (str): ``pretrained:<name>``.
        out_dir (str): The bench's output folder (the file goes to ``<out_dir>/options/``).
        datasets (list[dict]): Test dataset blocks.
        metrics (dict): ``val.metrics``.

    Returns:
        tuple: ``(path, shipped)``: the option file and the model's ``shipped`` record
        (:func:`interir_plugin.weights.shipped_options`).
    """
    shipped = shipped_options(spec[len(PREFIX):])
    opt = {'name': shipped['name'], 'model_type': 'UnfoldingRestorationModel', 'num_gpu': 0, 'manual_seed': 0,
           'network_g': shipped['network_g'],
           'datasets': {f'test_{i}': {k: v for k, v in ds.items() if k != 'phase'}
                        for i, ds in enumerate(datasets, 1)},
           'path': shipped['path'], 'val': {**shipped['val'], 'save_img': False, 'pbar': False, 'metrics': metrics}}
    file = re.sub(r'[^\w.\-]', '_', shipped['shipped']['model'])
    path = write_option(os.path.join(out_dir, 'options', f'test_{file}.yml'), opt,
                        f'written by interir bench for {spec}: {shipped["shipped"]["file"]}, sha256 '
                        f'{shipped["shipped"]["sha256"]}')
    return path, shipped


def resolve_models(option_paths, out_dir, data=None, log=print):
    """The option files to bench: ``pretrained:<name>`` entries replaced by their written option files.

    Args:
        option_paths (list[str]): Option files and ``pretrained:<name>`` specs.
        out_dir (str): The bench's output folder.
        data (list[str] | None): :func:`data_blocks` specs for the shipped models. Default: None (the datasets and
            metrics of the first option file in ``option_paths``).
        log (callable): Receives a line per shipped model. Default: print.

    Returns:
        tuple: ``(paths, training)``: option files in the given order, and ``{row name: {'iters', 'train_seconds'}}``
        of the shipped models whose manifest records them.
    """
    files = [p for p in option_paths if not is_pretrained(p)]
    if data and len(files) == len(option_paths):
        raise ValueError(f'bench: --data {" ".join(data)} is the test data of shipped models (pretrained:NAME), and '
                         'none is given; option files are scored on their own datasets')
    if data:
        datasets, metrics, source = data_blocks(data), DEFAULT_METRICS, '--data'
    elif len(files) < len(option_paths):
        if not files:
            raise ValueError('bench: a shipped model (pretrained:NAME) needs test data: pass --data PROTOCOL:SPLIT '
                             'or a CDD-11 folder, or an option file whose datasets it is scored on')
        donor = load_option_file(files[0])
        datasets, metrics, source = scored_datasets(donor, files[0]), donor['val']['metrics'], files[0]
    paths, training = [], {}
    for spec in option_paths:
        if not is_pretrained(spec):
            paths.append(spec)
            continue
        path, shipped = pretrained_option_file(spec, out_dir, datasets, metrics)
        record = shipped['shipped']
        log(f'{spec}: {record["file"]} (sha256 {record["sha256"][:12]}) as {shipped["name"]}, on the datasets of '
            f'{source}')
        if record['iterations'] is not None:
            training[shipped['name']] = {'iters': record['iterations'], 'train_seconds': record['train_seconds']}
        paths.append(path)
    return paths, training


def metrics_csv_path(root, opt, dataset_name):
    """Where :class:`UnfoldingRestorationModel` writes the metrics of a test run (see its docstring)."""
    file = f'{dataset_name}_{opt["name"]}.csv'.replace(os.sep, '_')
    return os.path.join(root, 'results', opt['name'], 'metrics', file)


def device_overrides(device):
    """``--force_yml`` entries that put BasicSR's model on ``device`` (``num_gpu`` 0 for the CPU, else 1)."""
    return [f'num_gpu={0 if device.type == "cpu" else 1}']


def identity_scores(dataset_opt, metric_opts, progress=True):
    """Score the degraded input itself against the ground truth, per label (the no-restoration baseline).

    Images are converted with BasicSR's ``tensor2img`` and scored with ``calculate_metric``, as in validation.

    Args:
        dataset_opt (dict): Test dataset options (``phase`` set).
        metric_opts (dict): ``val.metrics``.
        progress (bool): Progress bar on stderr. Default: True.

    Returns:
        dict: :func:`~interir_plugin.utils.metrics.label_summary` of the input's scores.
    """
    dataset = build_dataset(copy.deepcopy(dataset_opt))
    names = list(metric_opts) + ([HARM] if psnr_metric(metric_opts) else [])  # the input harms no image
    records = []
    for i in tqdm(range(len(dataset)), desc=f'input vs gt ({dataset_opt["name"]})', unit='img', disable=not progress):
        item = dataset[i]
        if 'gt' not in item:
            raise ValueError(f'dataset {dataset_opt["name"]} gives no gt; the baseline needs pairs')
        data = {'img': tensor2img([item['lq']]), 'img2': tensor2img([item['gt']])}
        label = item.get('label_name')
        values = {k: float(calculate_metric(data, o)) for k, o in metric_opts.items()}
        records.append((None if label is None else str(label), {HARM: 0.0, **values}))
    return label_summary(records, names, f'dataset {dataset_opt["name"]}')


def network_cost(network_opt, device, repeats=5, warmup=1):
    """Parameters, multiply-adds (3x256x256) and median latency (1x3x256x256) of a ``network_g`` (random weights).

    Args:
        network_opt (dict): ``network_g`` options.
        device (torch.device): Latency device.
        repeats (int): Timed passes. Default: 5.
        warmup (int): Untimed passes first. Default: 1.

    Returns:
        dict: ``params``, ``gmacs``, ``latency_ms``, ``device``.
    """
    net = build_network(copy.deepcopy(network_opt)).to(device).eval()
    shape = (input_channels(network_opt), *COST_INPUT[1:])
    cost = model_complexity(net, shape)
    latency = measure_latency(net, example_input(net, shape, device), repeats=repeats, warmup=warmup)
    name = 'cpu' if device.type == 'cpu' else torch.cuda.get_device_name(device)
    return {'params': cost['params'], 'gmacs': cost['gmacs'], 'latency_ms': latency['latency_ms'],
            'device': f'{name} ({torch.get_num_threads()} threads)' if device.type == 'cpu' else name}


def bench(option_paths, out_dir='bench', root='.', rerun=False, identity=True, device='auto', repeats=5,
          warmup=1, progress=True, verbose=False, training=None, log=print, data=None):
    """Test every option file (or reuse its results), then write one leaderboard.

    Args:
        option_paths (list[str]): Test option files (``network_g``, ``path.pretrain_network_g``, ``datasets``,
            ``val.metrics``) and shipped models (``pretrained:<name>``, module docstring).
        out_dir (str): Folder of ``leaderboard.{md,csv,png}`` (created). Default: 'bench'.
        root (str): Root of BasicSR's ``results/<name>/``. Default: '.'.
        rerun (bool): Run the test pipeline even where its metrics CSV exists. Default: False.
        identity (bool): Add the degraded-input baseline row per dataset. Default: True.
        device (str): ``'auto'``, ``'cpu'`` or ``'cuda[:i]'``: where tests and latency run. Default: 'auto'.
        repeats (int): Timed forward passes for latency. Default: 5.
        warmup (int): Untimed passes first. Default: 1.
        progress (bool): Progress bars. Default: True.
        verbose (bool): Show BasicSR's INFO log on the console; it goes to ``out_dir/bench.log`` either way (if
            BasicSR's logger is not configured yet in this process). Default: False.
        training (dict | None): ``{model name: {'iters': int, 'train_seconds': float}}`` of the runs that made the
            weights, shown as leaderboard columns. Default: None.
        log (callable): Receives one-line progress messages. Default: print.
        data (list[str] | None): Test data of the shipped models (:func:`data_blocks`). Default: None (the first
            option file's datasets and metrics).

    Returns:
        dict: ``rows`` and the paths/markdown of :func:`leaderboard.write_leaderboard`.
    """
    if not option_paths:
        raise ValueError('bench: give at least one option file (-opt A.yml -opt B.yml ...)')
    dev = resolve_device(device)
    option_paths, shipped_training = resolve_models(option_paths, out_dir, data, log)
    training = {**shipped_training, **(training or {})}
    route_basicsr_log(os.path.join(out_dir, 'bench.log'), verbose)
    rows, baselines = [], {}
    for path in option_paths:
        opt = load_option_file(path)
        if 'name' not in opt:
            raise ValueError(f'{path}: option "name" is required (results go to results/<name>/)')
        if not (opt.get('path') or {}).get('pretrain_network_g'):
            log(f'WARNING: {path}: path.pretrain_network_g is not set; {opt["name"]} is scored with RANDOM weights')
        datasets = scored_datasets(opt, path)
        csvs = [metrics_csv_path(root, opt, ds['name']) for ds in datasets]
        if rerun or not all(os.path.isfile(p) for p in csvs):
            log(f'testing {opt["name"]} ({path}) ...')
            with device_scope(dev):  # BasicSR's model runs on the current CUDA device: make it dev
                run_basicsr('test', path, root, ['model_type=UnfoldingRestorationModel', *device_overrides(dev)])
            missing = [p for p in csvs if not os.path.isfile(p)]
            if missing:
                raise RuntimeError(f'{path}: the test run wrote no metrics CSV {missing[0]}')
        else:
            log(f'reusing {", ".join(csvs)} (pass --rerun to test again)')
        cost = network_cost(opt['network_g'], dev, repeats, warmup)
        for ds, csv_path in zip(datasets, csvs):
            scores = leaderboard.read_metrics_csv(csv_path)
            rows.append({'model': opt['name'], 'network': opt['network_g']['type'], 'dataset': ds['name'], **cost,
                         **training.get(opt['name'], {}),
                         **{k: scores[k] for k in ('images', 'metrics', 'labels', 'per_label', 'mean')}})
            if identity and ds['name'] not in baselines:
                baselines[ds['name']] = identity_scores(ds, opt['val']['metrics'], progress)
    for name, scores in baselines.items():
        rows.append({'model': leaderboard.IDENTITY_NAME, 'network': '-', 'dataset': name, 'params': None,
                     'gmacs': None, 'latency_ms': None, 'device': None, **scores})
    return {'rows': rows, **leaderboard.write_leaderboard(rows, out_dir)}
