"""``interir demo``: the main job on the embedded data set, from nothing to a leaderboard at equal training time.

Steps (each printed with its wall time):

1. MiniCDD: built under ``datasets/MiniCDD`` (relative to the current directory, where the option files look
   for it) by :func:`interir_plugin.data.preparation.make_minicdd` unless its splits (LORO's included) exist.
2. Training, with BasicSR's trainer, of every model in :data:`DEMO_MODELS` (InterIR-S, a DGUNet of similar size,
   and BasicSR's own RIDNet as the zoo reference) from its shipped MiniCDD recipe, for the same wall-clock
   ``budget`` each (``train.time_budget``: the schedule is spread over the seconds, not the iterations). Every
   ``budget / CURVE_POINTS`` seconds of training each model is validated on 11 crops of the LORO held-out split
   (:data:`CURVE_TILE`, :data:`CURVE_CROP`; validation time is not counted): ``<out>/learning_curve.{csv,png}``,
   PSNR against training seconds. Everything runs on :data:`DEFAULT_THREADS` torch threads unless told otherwise.
3. Scoring of every model and of the degraded input on a fixed subset of each of :data:`SCORE_SPLITS`, the MiniCDD
   test split and the leave-one-renderer-out test split (:data:`SCORE_TILE`, :data:`SCORE_CROP`: 33 crops of 128 x 128
   each) with :func:`interir_plugin.tools.bench.bench`: ``<out>/leaderboard.{md,csv,png}``, one dataset per split,
   with PSNR, SSIM and the harm rate per label and their means, the iterations each model reached and its training
   seconds; ``means`` puts the two splits' means side by side.
4. :func:`interir_plugin.tools.explain.explain` of the trained InterIR-S on the first clean test tile synthesised
   into the hardest category (``low_haze_rain``, seed 0: the true physical maps are drawn beside the network's),
   and :func:`interir_plugin.tools.audit.audit` of it on the held-out clean photos synthesised into every
   category by the renderers the training never saw (:data:`AUDIT_PROTOCOL`, :data:`AUDIT_SPLIT`):
   ``<out>/explain/``, ``<out>/audit/``.

BasicSR's log of all runs goes to ``<out>/demo.log``; the console gets the steps, the trainer's iteration lines,
the leaderboard and the audit's headline. ``quick`` runs the same steps on a tiny budget and a few images: it
checks the wiring and is what the test suite runs; its numbers mean nothing.
"""
import contextlib
import csv
import logging
import os
import time

import torch

from interir_plugin.tools import leaderboard
from interir_plugin.tools.bench import DEFAULT_METRICS, bench, identity_scores
from interir_plugin.tools.console import route_basicsr_log
from interir_plugin.tools.loading import device_scope, resolve_device
from interir_plugin.tools.options import load_option_file, write_option
from interir_plugin.tools.pipelines import run_basicsr

#: Repository root (the demo's option files live in its ``options/``).
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
#: Where the option files expect MiniCDD (relative to the current directory).
DATA_ROOT = os.path.join('datasets', 'MiniCDD')
#: ``(name, training option file relative to the repository root)`` of the demo's models: the name is the
#: leaderboard's model column and the test run's ``results/<name>`` folder. The first one is explained and audited.
DEMO_MODELS = (
    ('InterIR-S', 'options/train/InterIR/train_InterIR-S_MiniCDD.yml'),
    ('DGUNet-S', 'options/train/DGUNet/train_DGUNet-S_MiniCDD.yml'),
    ('RIDNet-zoo', 'options/bench/train_RIDNet_MiniCDD.yml'),
)
#: Default training seconds per model (``--budget``): ``make demo`` on a fresh clone within 8 minutes on 2 cores.
DEFAULT_BUDGET = 60
#: Default torch threads (``--threads``): one, so every model gets the same single core for its budget (on a
#: shared 2-core CPU two threads made InterIR-S's step 1.5x slower, docs/training.md).
DEFAULT_THREADS = 1
#: Validation points of the learning curve after the first one (one every ``budget / CURVE_POINTS`` seconds).
CURVE_POINTS = 4
#: The learning curve's images: the centre ``CURVE_CROP x CURVE_CROP`` of the tiles named ``*CURVE_TILE`` of the
#: leave-one-renderer-out held-out split (held-out photos, renderers the training never saw; one photo, so 11 crops:
#: a validation point costs DGUNet-S about 5 s on a CPU).
CURVE_SPLIT = 'loro_heldout'
CURVE_TILE = 'grace_hopper_0'
CURVE_CROP = 96
#: What the leaderboard scores: the centre ``SCORE_CROP x SCORE_CROP`` of the first tile of every test photo, in
#: every label (3 photos x 11 labels = 33 images; DGUNet-S takes seconds per 256 x 256 image on a CPU, so the whole
#: split would not fit the demo's one minute of scoring). Every model and the input are scored on the same crops.
SCORE_TILE = '_0'
SCORE_CROP = 128
#: The MiniCDD splits the leaderboard scores, each as above (a dataset ``MiniCDD_<split>_crops<SCORE_CROP>`` each):
#: ``test`` (the test photos degraded by the original renderers: our own synthesiser, reported) and ``loro_test``
#: (the same photos degraded by the renderers the leave-one-renderer-out protocol holds out from training;
#: datasets_meta/minicdd_loro.yml, issue 22).
SCORE_SPLITS = ('test', 'loro_test')
#: The demo's metrics (BasicSR's, RGB, no border crop): PSNR for the learning curves, both for the leaderboard (whose
#: rows also get the harm rate from the PSNR).
METRICS = DEFAULT_METRICS
#: Category of the explained test image.
EXPLAIN_LABEL = 'low_haze_rain'
#: What the demo audits: the held-out photos synthesised on the fly by the renderers the leave-one-renderer-out
#: protocol holds out from training (photos and renderers the network never saw, with the true maps).
AUDIT_PROTOCOL, AUDIT_SPLIT = 'minicdd_loro', 'heldout_synth'
#: Side of the centre crops the demo audits (the held-out tiles are 192 x 192; 128 x 128 crops, like the
#: leaderboard's, keep every photo and category and cut the audit's 12 forward passes per image to 44 % of the pixels).
AUDIT_SIDE = 128
#: ``quick`` settings: training seconds, test labels and images per label, latency repeats, audited images.
QUICK = {'budget': 2, 'labels': ('haze', 'low_haze_rain'), 'images_per_label': 1, 'audit_images': 2}


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
    """Build MiniCDD under :data:`DATA_ROOT` unless all its splits exist (train, test, heldout and the stored
    leave-one-renderer-out splits ``loro_heldout``, ``loro_test``; a MiniCDD made before those is rebuilt, its first
    three splits byte-identical); return its path."""
    from interir_plugin.data.preparation import make_minicdd, minicdd_split_names

    if all(os.path.isdir(os.path.join(DATA_ROOT, split)) for split in minicdd_split_names()):
        log(f'MiniCDD found at {DATA_ROOT}')
    else:
        manifest = make_minicdd(DATA_ROOT, seed=0, force=True)
        counts = {s: len(v['images']) for s, v in manifest['splits'].items()}
        log(f'MiniCDD built at {DATA_ROOT} ({counts} images per category, 11 categories + clear)')
    return DATA_ROOT


def write_crops(out, split, tile, crop, labels=None, max_images=None):
    """Write the centre ``crop x crop`` of the images of a MiniCDD split whose names end with ``tile`` (first
    ``max_images`` of them, every label or ``labels``) as a CDD-11 layout under ``out``; return ``out``."""
    import cv2
    import numpy as np

    from interir_plugin.data.degradations import CDD11_CATEGORIES
    from interir_plugin.utils.images import decode_image

    root = os.path.join(DATA_ROOT, split)
    names = [n for n in sorted(os.listdir(os.path.join(root, 'clear'))) if os.path.splitext(n)[0].endswith(tile)]
    for folder in ('clear', *(labels or CDD11_CATEGORIES)):
        os.makedirs(os.path.join(out, folder), exist_ok=True)
        for name in names[:max_images]:
            path = os.path.join(root, folder, name)
            with open(path, 'rb') as f:
                img = decode_image(f.read(), path)
            top, left = (img.shape[0] - crop) // 2, (img.shape[1] - crop) // 2
            patch = np.round(img[top:top + crop, left:left + crop] * 255).astype(np.uint8)
            if not cv2.imwrite(os.path.join(out, folder, name), patch):
                raise OSError(f'cannot write {os.path.join(out, folder, name)}')
    return out


def cdd11_dataset(name, root, labels=None):
    """A validation/test dataset block: a CDD-11 layout folder, optionally some labels."""
    cdd11 = {'root': root, **({'categories': list(labels)} if labels else {})}
    return {'name': name, 'type': 'MultiDegradationPairedDataset', 'cdd11': cdd11, 'io_backend': {'type': 'disk'}}


def make_train_option(train_opt, device, budget, curve_set):
    """A demo model's training options: its recipe for ``budget`` seconds, validated on ``curve_set`` every
    ``budget / CURVE_POINTS`` seconds (PSNR only)."""
    opt = dict(train_opt, num_gpu=0 if device.type == 'cpu' else 1)
    opt['train'] = dict(train_opt['train'], time_budget=budget)
    opt['datasets'] = {'train': train_opt['datasets']['train'], 'val_curve': curve_set}
    opt['val'] = {'val_freq': 1, 'val_seconds': budget / CURVE_POINTS, 'save_img': False, 'pbar': False,
                  'metrics': {'psnr': METRICS['psnr']}}  # the curve: PSNR only
    return opt


def make_test_option(name, train_opt, weights, dataset):
    """Test options for a trained demo model: its network and weights (EMA when the run kept them) on ``dataset``.

    Args:
        name (str): Run name (``results/<name>``, the leaderboard's model column).
        train_opt (dict): The model's training options.
        weights (str): ``net_g_latest.pth`` of the run.
        dataset (dict | list[dict]): The test dataset block(s) (:func:`cdd11_dataset`): ``test_1``, ``test_2``, ...

    Returns:
        dict: Options for BasicSR's test pipeline.
    """
    ema = (train_opt.get('train') or {}).get('ema_decay', 0) > 0
    datasets = [dataset] if isinstance(dataset, dict) else list(dataset)
    return {
        'name': name, 'model_type': 'UnfoldingRestorationModel', 'num_gpu': 'auto', 'manual_seed': 0,
        'network_g': train_opt['network_g'], 'datasets': {f'test_{i}': ds for i, ds in enumerate(datasets, 1)},
        'path': {'pretrain_network_g': weights, 'param_key_g': 'params_ema' if ema else 'params',
                 'strict_load_g': True},
        'val': {'save_img': False, 'pbar': False, 'metrics': METRICS},
    }


def read_curve(path):
    """``[(iter, train_seconds, psnr)]`` from a model's ``curve_<dataset>.csv``."""
    with open(path, newline='', encoding='utf-8') as f:
        return [(int(r['iter']), float(r['train_seconds']), float(r['psnr'])) for r in csv.DictReader(f)]


def write_learning_curve(curves, out_dir, subset, input_psnr=None):
    """``learning_curve.csv`` and ``.png``: PSNR against training seconds per model (and the degraded input's PSNR
    on the same images as the row ``input``, a dashed line); returns both paths."""
    import matplotlib

    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    csv_path, png_path = os.path.join(out_dir, 'learning_curve.csv'), os.path.join(out_dir, 'learning_curve.png')
    with open(csv_path, 'w', newline='', encoding='utf-8') as f:
        writer = csv.writer(f)
        writer.writerow(['model', 'iter', 'train_seconds', 'psnr'])
        writer.writerows([name, *point] for name, points in curves.items() for point in points)
        if input_psnr is not None:
            writer.writerow(['input', '', '', f'{input_psnr:.4f}'])
    fig, ax = plt.subplots(figsize=(7, 4.5))
    if input_psnr is not None:
        ax.axhline(input_psnr, ls='--', color='0.5', lw=1, label=f'input, no restoration ({input_psnr:.2f})')
    for name, points in curves.items():
        ax.plot([p[1] for p in points], [p[2] for p in points], marker='o', label=f'{name} ({points[-1][0]} iter)')
    ax.set_xlabel('training seconds')
    ax.set_ylabel('PSNR (dB, mean over labels)')
    ax.set_title(f'Learning curve on {subset}')
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(png_path, dpi=110)
    plt.close(fig)
    return csv_path, png_path


class _Steps:
    """Numbered progress lines and the wall time of every step (``seconds``)."""

    def __init__(self, total, log):
        self.total, self.log, self.start, self.seconds, self.k = total, log, time.perf_counter(), {}, 0

    @contextlib.contextmanager
    def __call__(self, key, text):
        self.k += 1
        self.log(f'[{self.k}/{self.total}] {text}  ({time.perf_counter() - self.start:.0f} s elapsed)')
        t = time.perf_counter()
        yield
        self.seconds[key] = time.perf_counter() - t


def train_models(paths, out_dir, opt_dir, device, budget, curve_set, steps, log):
    """Train every ``(name, option file)`` for ``budget`` seconds; return ``[(name, train_opt, weights, figures)]``
    with ``figures = {iters, train_seconds, curve}``."""
    echo, basicsr_logger, trained = _IterationEcho(log), logging.getLogger('basicsr'), []
    for name, path, shown in paths:
        recipe = load_option_file(path)
        opt = make_train_option(recipe, device, budget, curve_set)
        file = write_option(os.path.join(opt_dir, f'train_{name}.yml'), opt,
                            f'written by interir demo: {shown} for {budget} s of training')
        with steps(f'train {name}', f'training {name} ({opt["network_g"]["type"]}) for {budget:g} s on '
                                    f'{"CPU" if device.type == "cpu" else "GPU"} from {shown}'):
            basicsr_logger.addHandler(echo)
            try:
                with device_scope(device):  # BasicSR trains on the current CUDA device: make it the one asked for
                    spent = run_basicsr('train', file, out_dir)
            finally:
                basicsr_logger.removeHandler(echo)
        log_dir = os.path.join(out_dir, 'experiments', opt['name'])
        weights = os.path.join(log_dir, 'models', 'net_g_latest.pth')
        if spent is None or not os.path.isfile(weights):
            raise RuntimeError(f'training {name} ({path}) did not end on its time budget with {weights}; '
                               f'see {out_dir}/demo.log (is train.total_iter large enough for {budget} s?)')
        curve = read_curve(os.path.join(log_dir, 'metrics', f'curve_{curve_set["name"]}.csv'))
        log(f'    {name}: {spent.iters} iterations in {spent.seconds:.1f} s of training; held-out PSNR '
            + ' -> '.join(f'{p[2]:.2f}' for p in curve))
        trained.append((name, opt, weights, {'iters': spent.iters, 'train_seconds': spent.seconds, 'curve': curve}))
    return trained


def demo(out_dir='interir_demo', quick=False, device='auto', models=DEMO_MODELS, budget=DEFAULT_BUDGET,
         threads=DEFAULT_THREADS, log=print):
    """Run the demo (module docstring) and return where its outputs are.

    Args:
        out_dir (str): Output folder. Default: 'interir_demo'.
        quick (bool): :data:`QUICK` settings (wiring check, meaningless numbers). Default: False.
        device (str): ``'auto'`` (CUDA if available), ``'cpu'`` or ``'cuda[:i]'``. Default: 'auto'.
        models (tuple[tuple[str, str]]): ``(name, training option file)``; relative paths are taken from the
            repository root. Default: :data:`DEMO_MODELS`.
        budget (float): Training seconds per model. Default: :data:`DEFAULT_BUDGET`.
        threads (int | None): torch threads for everything the demo runs; None keeps torch's. Default:
            :data:`DEFAULT_THREADS`.
        log (callable): Receives the progress lines. Default: print.

    Returns:
        dict: ``leaderboard`` (bench result: ``rows``, ``md``, ``csv``, ``png``, ``markdown``), ``means`` (markdown
        lines: every model's means on both scored splits, :func:`~interir_plugin.tools.leaderboard.means_table`),
        ``curve`` (csv, png paths), ``training`` (per model: iterations, seconds, curve), ``explain`` and ``audit``
        (paths; the audit's ``headline``), ``log`` (BasicSR's log file), ``seconds`` (per step and ``total``).
    """
    if not budget > 0:
        raise ValueError(f'demo: budget must be a positive number of seconds, got {budget!r}')
    if threads is not None:
        if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
            raise ValueError(f'demo: threads must be a positive int, got {threads!r}')
        torch.set_num_threads(threads)
    dev = resolve_device(device)
    budget = QUICK['budget'] if quick else budget
    paths = [(name, p if os.path.isabs(p) else os.path.join(REPO_ROOT, p), p) for name, p in models]
    missing = [p for _, p, _ in paths if not os.path.isfile(p)]
    if missing:
        raise FileNotFoundError(f'demo option file(s) not found: {", ".join(missing)} (the demo runs from a source '
                                'checkout of interir_plugin, whose options/ folder holds them)')
    opt_dir = os.path.join(out_dir, 'options')
    os.makedirs(opt_dir, exist_ok=True)
    log_file = os.path.join(out_dir, 'demo.log')
    route_basicsr_log(log_file)
    steps = _Steps(len(paths) + 4, log)

    with steps('data', 'data'):
        ensure_minicdd(log)
    labels = QUICK['labels'] if quick else None
    curve_root = write_crops(os.path.join(out_dir, 'curve_set'), CURVE_SPLIT, CURVE_TILE, CURVE_CROP, labels)
    curve_set = cdd11_dataset(f'MiniCDD_{CURVE_SPLIT}_crops{CURVE_CROP}', curve_root, labels)
    trained = train_models(paths, out_dir, opt_dir, dev, budget, curve_set, steps, log)
    curve_metric = {'psnr': METRICS['psnr']}
    input_psnr = identity_scores({**curve_set, 'phase': 'val'}, curve_metric, progress=False)['mean']['psnr']
    subset = f'{CURVE_CROP} x {CURVE_CROP} crops of {CURVE_SPLIT} {CURVE_TILE}, every label'
    curve = write_learning_curve({name: fig['curve'] for name, _, _, fig in trained}, out_dir, subset, input_psnr)

    option_files, board = score_models(trained, out_dir, opt_dir, device, quick, steps, log)
    explained, audited = explain_and_audit(trained[0][0], option_files[0], out_dir, device, quick, steps, log)
    steps.seconds['total'] = time.perf_counter() - steps.start
    return {'leaderboard': board, 'means': leaderboard.means_table(board['rows']),
            'curve': {'csv': curve[0], 'png': curve[1]},
            'training': {name: fig for name, _, _, fig in trained}, 'explain': explained, 'audit': audited,
            'log': log_file, 'seconds': steps.seconds}


def score_models(trained, out_dir, opt_dir, device, quick, steps, log):
    """Score every trained model and the input on crops of each of :data:`SCORE_SPLITS` (one bench run, one dataset per
    split); return the test option files (in model order) and the bench result."""
    labels = QUICK['labels'] if quick else None
    splits = ' and '.join(SCORE_SPLITS)
    with steps('test', f'scoring every model and the degraded input on the centre {SCORE_CROP} x {SCORE_CROP} of '
                       f'each test photo\'s first tile, MiniCDD splits {splits}'):
        test_sets = [cdd11_dataset(f'MiniCDD_{split}_crops{SCORE_CROP}',
                                   write_crops(os.path.join(out_dir, 'score_set', split), split, SCORE_TILE,
                                               SCORE_CROP, labels, QUICK['images_per_label'] if quick else None),
                                   labels) for split in SCORE_SPLITS]
        option_files = [write_option(os.path.join(opt_dir, f'test_{name}.yml'),
                                     make_test_option(name, opt, weights, test_sets),
                                     f'written by interir demo: {name} trained by {out_dir}/experiments/{opt["name"]}')
                        for name, opt, weights, _ in trained]
        training = {name: {k: fig[k] for k in ('iters', 'train_seconds')} for name, _, _, fig in trained}
        board = bench(option_files, out_dir, root=out_dir, rerun=True, device=device, training=training, repeats=1,
                      warmup=0, progress=False, log=log)
    return option_files, board


def explain_and_audit(name, option_file, out_dir, device, quick, steps, log):
    """Explain the first model on one test image and audit it on the held-out clean photos; return both paths."""
    from interir_plugin.tools.audit import audit
    from interir_plugin.tools.explain import explain

    label = QUICK['labels'][-1] if quick else EXPLAIN_LABEL
    with steps('explain', f'explaining {name} on one test photo synthesised into {label}'):
        # synthesised here rather than read from test/<label>/: the synthesiser's maps are the truth the figure shows
        image = sorted(os.listdir(os.path.join(DATA_ROOT, 'test', label)))[0]
        explained = explain(option_file, os.path.join(DATA_ROOT, 'test', 'clear', image),
                            os.path.join(out_dir, 'explain'), category=label, seed=0, device=device)
    with steps('audit', f'auditing {name} on the centre {AUDIT_SIDE} x {AUDIT_SIDE} of the held-out clean photos, '
                        'synthesised into every category by the renderers the training never saw'):
        result = audit(option_file, AUDIT_PROTOCOL, os.path.join(out_dir, 'audit'),
                       categories=QUICK['labels'] if quick else None, seed=0, device=device,
                       max_images=QUICK['audit_images'] if quick else None, log=lambda _: None,
                       max_side=AUDIT_SIDE, split=AUDIT_SPLIT)
        log(result['headline'])
    return {k: explained[k] for k in ('png', 'json')}, {k: result[k] for k in ('json', 'md', 'png', 'headline')}
