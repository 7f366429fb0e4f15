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
"""
import copy
import os

import torch
from basicsr.archs import build_network
from basicsr.data import build_dataset
from basicsr.metrics import calculate_metric
from basicsr.utils import tensor2img
from tqdm import tqdm

from interir_plugin.tools import leaderboard
from interir_plugin.tools.console import route_basicsr_log
from interir_plugin.tools.loading import device_scope, input_channels, resolve_device
from interir_plugin.tools.options import load_option_file
from interir_plugin.tools.pipelines import run_basicsr
from interir_plugin.tools.profile import example_input, measure_latency
from interir_plugin.utils.complexity import model_complexity
from interir_plugin.utils.metrics import HARM, label_summary, psnr_metric

#: Input of the cost columns (C, H, W); C is replaced by the network's input channels.
COST_INPUT = (3, 256, 256)


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
          warmup=1, progress=True, verbose=False, training=None, log=print):
    """Test every option file (or reuse its results), then write one leaderboard.

    Args:
        option_paths (list[str]): Test option files (``network_g``, ``path.pretrain_network_g``, ``datasets``,
            ``val.metrics``).
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

    Returns:
        dict: ``rows`` and the paths/markdown of :func:`leaderboard.write_leaderboard`.
    """
    if not option_paths:
        raise ValueError('bench: give at least one option file (-opt A.yml -opt B.yml ...)')
    dev = resolve_device(device)
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
                         **(training or {}).get(opt['name'], {}),
                         **{k: scores[k] for k in ('images', 'metrics', 'labels', 'per_label', 'mean')}})
            if identity and ds['name'] not in baselines:
                baselines[ds['name']] = identity_scores(ds, opt['val']['metrics'], progress)
    for name, scores in baselines.items():
        rows.append({'model': leaderboard.IDENTITY_NAME, 'network': '-', 'dataset': name, 'params': None,
                     'gmacs': None, 'latency_ms': None, 'device': None, **scores})
    return {'rows': rows, **leaderboard.write_leaderboard(rows, out_dir)}
