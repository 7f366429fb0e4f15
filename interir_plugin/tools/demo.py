"""``interir demo``: the main job on the embedded data set, from nothing to a leaderboard and an explain figure.

Steps (each printed with its wall time):

1. MiniCDD: built under ``datasets/MiniCDD`` (relative to the current directory, where the option files look
   for it) by :func:`interir_plugin.data.preparation.make_minicdd` unless its ``train/`` and ``test/`` exist.
2. Training, with BasicSR's trainer, of every model in :data:`DEMO_MODELS` (InterIR-S, a DGUNet of similar size,
   and BasicSR's own RIDNet as the zoo reference), each from its shipped option file, unchanged except for
   ``num_gpu`` (the chosen device) and ``val: ~`` (no validation during training: step 3 scores every model
   once). Experiments go to ``<out>/experiments/<name>/``.
3. :func:`interir_plugin.tools.bench.bench` on test option files written to ``<out>/options/`` (each network
   with its ``net_g_latest.pth``, EMA weights when the run kept them, on the MiniCDD test split), plus the
   degraded input as a baseline: ``<out>/leaderboard.{md,csv,png}``.
4. :func:`interir_plugin.tools.explain.explain` of the trained InterIR-S on one test image of the hardest
   category (``low_haze_rain``), with its clean image for per-stage PSNR: ``<out>/explain/``.

BasicSR's log of all runs goes to ``<out>/demo.log``; the console gets the steps, the trainer's iteration lines
and the leaderboard. ``quick`` runs the same steps with :data:`QUICK` settings (a few iterations, a few test
images): it checks the wiring and is what the test suite runs; its numbers mean nothing.
"""
import logging
import os
import time

import yaml

from interir_plugin.tools.bench import bench
from interir_plugin.tools.console import route_basicsr_log
from interir_plugin.tools.explain import explain
from interir_plugin.tools.loading import resolve_device
from interir_plugin.tools.options import load_option_file
from interir_plugin.tools.pipelines import run_basicsr

#: Repository root (the demo's option files live in its ``options/``).
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
#: Where the option files expect MiniCDD (relative to the current directory).
DATA_ROOT = os.path.join('datasets', 'MiniCDD')
#: ``(name, training option file relative to the repository root)`` of the demo's models: the name is the
#: leaderboard's model column and the test run's ``results/<name>`` folder. The first one is explained.
DEMO_MODELS = (
    ('InterIR-S', 'options/train/InterIR/train_InterIR-S_MiniCDD_smoke.yml'),
    ('DGUNet-S', 'options/train/DGUNet/train_DGUNet-S_MiniCDD_smoke.yml'),
    ('RIDNet-zoo', 'options/bench/train_RIDNet_MiniCDD_smoke.yml'),
)
#: Category of the explained test image.
EXPLAIN_LABEL = 'low_haze_rain'
#: ``quick`` settings: training iterations, test labels and images per label, latency repeats.
QUICK = {'total_iter': 2, 'labels': ('haze', 'low_haze_rain'), 'images_per_label': 1, 'repeats': 1}


class _IterationEcho(logging.Handler):
    """Print BasicSR's training-progress lines (``[<name>][epoch: .., iter: .., ...] ...``) to the console."""

    def __init__(self, write):
        super().__init__(logging.INFO)
        self.write = write

    def emit(self, record):
        message = record.getMessage()
        if message.startswith('[') and 'iter:' in message:
            self.write(f'    {message}')


def ensure_minicdd(log=print):
    """Build MiniCDD under :data:`DATA_ROOT` unless its train and test splits exist; return its path."""
    from interir_plugin.data.preparation import make_minicdd

    if all(os.path.isdir(os.path.join(DATA_ROOT, split)) for split in ('train', 'test')):
        log(f'MiniCDD found at {DATA_ROOT}')
    else:
        manifest = make_minicdd(DATA_ROOT, seed=0)
        counts = {s: len(v['images']) for s, v in manifest['splits'].items()}
        log(f'MiniCDD built at {DATA_ROOT} ({counts} images per category, 11 categories + clear)')
    return DATA_ROOT


def make_test_option(name, train_opt, weights, labels=None, meta_info_file=None):
    """Test options for a trained demo model: its network and weights on the MiniCDD test split.

    Args:
        name (str): Run name (``results/<name>``, the leaderboard's model column).
        train_opt (dict): The model's training options.
        weights (str): ``net_g_latest.pth`` of the run.
        labels (tuple[str] | None): Test categories; None for all 11. Default: None.
        meta_info_file (str | None): Name list selecting test images; None for all. Default: None.

    Returns:
        dict: Options for BasicSR's test pipeline.
    """
    cdd11 = {'root': os.path.join(DATA_ROOT, 'test')}
    if labels:
        cdd11['categories'] = list(labels)
    if meta_info_file:
        cdd11['meta_info_file'] = meta_info_file
    ema = (train_opt.get('train') or {}).get('ema_decay', 0) > 0
    return {
        'name': name, 'model_type': 'UnfoldingRestorationModel', 'num_gpu': 'auto',
        'manual_seed': 0, 'network_g': train_opt['network_g'],
        'datasets': {'test_1': {'name': 'MiniCDD', 'type': 'MultiDegradationPairedDataset', 'cdd11': cdd11,
                                'io_backend': {'type': 'disk'}}},
        'path': {'pretrain_network_g': weights, 'param_key_g': 'params_ema' if ema else 'params',
                 'strict_load_g': True},
        'val': {'save_img': False, 'pbar': False,
                'metrics': {'psnr': {'type': 'calculate_psnr', 'crop_border': 0, 'test_y_channel': False},
                            'ssim': {'type': 'calculate_ssim', 'crop_border': 0, 'test_y_channel': False}}},
    }


def demo(out_dir='interir_demo', quick=False, device='auto', models=DEMO_MODELS, log=print):
    """Run the demo (module docstring) and return where its outputs are.

    Args:
        out_dir (str): Output folder. Default: 'interir_demo'.
        quick (bool): :data:`QUICK` settings (wiring check, meaningless numbers). Default: False.
        device (str): ``'auto'`` (CUDA if available), ``'cpu'`` or ``'cuda[:i]'``. Default: 'auto'.
        models (tuple[tuple[str, str]]): ``(name, training option file)``; relative paths are taken from the
            repository root. Default: :data:`DEMO_MODELS`.
        log (callable): Receives the progress lines. Default: print.

    Returns:
        dict: ``leaderboard`` (bench result: ``rows``, ``md``, ``csv``, ``png``, ``markdown``), ``explain`` (paths),
        ``log`` (BasicSR's log file), ``seconds`` (per step and ``total``).
    """
    start = time.perf_counter()
    seconds = {}
    dev = resolve_device(device)
    paths = [(name, p if os.path.isabs(p) else os.path.join(REPO_ROOT, p), p) for name, p in models]
    missing = [p for _, p, _ in paths if not os.path.isfile(p)]
    if missing:
        raise FileNotFoundError(f'demo option file(s) not found: {", ".join(missing)} (the demo runs from a source '
                                'checkout of interir_plugin, whose options/ folder holds them)')
    os.makedirs(out_dir, exist_ok=True)
    log_file = os.path.join(out_dir, 'demo.log')
    route_basicsr_log(log_file)
    n_steps = len(paths) + 3

    def step(k, text):
        log(f'[{k}/{n_steps}] {text}  ({time.perf_counter() - start:.0f} s elapsed)')

    t = time.perf_counter()
    step(1, 'data')
    ensure_minicdd(log)
    seconds['data'] = time.perf_counter() - t

    force = [f'num_gpu={0 if dev.type == "cpu" else 1}', 'val=~']
    if quick:
        force.append(f'train:total_iter={QUICK["total_iter"]}')
    echo = _IterationEcho(log)
    basicsr_logger = logging.getLogger('basicsr')
    test_opts = []
    for k, (name, path, shown) in enumerate(paths, start=2):
        train_opt = load_option_file(path)
        iters = QUICK['total_iter'] if quick else train_opt['train']['total_iter']
        step(k, f'training {name} ({train_opt["network_g"]["type"]}, {iters} iterations on '
                f'{"CPU" if dev.type == "cpu" else "GPU"}) from {shown}')
        t = time.perf_counter()
        basicsr_logger.addHandler(echo)
        try:
            run_basicsr('train', path, out_dir, force)
        finally:
            basicsr_logger.removeHandler(echo)
        seconds[f'train {name}'] = time.perf_counter() - t
        weights = os.path.join(out_dir, 'experiments', train_opt['name'], 'models', 'net_g_latest.pth')
        if not os.path.isfile(weights):
            raise RuntimeError(f'training {name} ({path}) ended without {weights}; see {log_file}')
        test_opts.append((name, train_opt, weights))

    k = len(paths) + 2
    step(k, 'testing every model and the degraded input on the MiniCDD test split')
    t = time.perf_counter()
    opt_dir = os.path.join(out_dir, 'options')
    os.makedirs(opt_dir, exist_ok=True)
    labels, meta = None, None
    if quick:
        labels = QUICK['labels']
        names = sorted(os.listdir(os.path.join(DATA_ROOT, 'test', 'clear')))[:QUICK['images_per_label']]
        meta = os.path.join(opt_dir, 'quick_test_images.txt')
        with open(meta, 'w', encoding='utf-8') as f:
            f.write(''.join(f'{n}\n' for n in names))
    option_files = []
    for name, train_opt, weights in test_opts:
        opt = make_test_option(name, train_opt, weights, labels, meta)
        file = os.path.join(opt_dir, f'{opt["name"]}.yml')
        with open(file, 'w', encoding='utf-8') as f:
            f.write(f'# written by interir demo: {name} trained by {out_dir}/experiments/{train_opt["name"]}\n')
            yaml.safe_dump(opt, f, sort_keys=False)
        option_files.append(file)
    board = bench(option_files, out_dir, root=out_dir, rerun=True, device=device,
                  repeats=QUICK['repeats'] if quick else 5, warmup=0 if quick else 1, progress=False, log=log)
    seconds['test'] = time.perf_counter() - t

    label = labels[-1] if quick else EXPLAIN_LABEL
    step(k + 1, f'explaining {test_opts[0][0]} on one {label} test image')
    t = time.perf_counter()
    image = sorted(os.listdir(os.path.join(DATA_ROOT, 'test', label)))[0]
    explained = explain(option_files[0], os.path.join(DATA_ROOT, 'test', label, image),
                        os.path.join(out_dir, 'explain'), gt_path=os.path.join(DATA_ROOT, 'test', 'clear', image),
                        device=device)
    seconds['explain'] = time.perf_counter() - t
    seconds['total'] = time.perf_counter() - start
    return {'leaderboard': board, 'explain': {k: explained[k] for k in ('png', 'json')}, 'log': log_file,
            'seconds': seconds}
