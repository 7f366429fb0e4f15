"""Ablation of InterIR-S at equal CPU time: every variant trained for the same seconds, scored on held-out data.

    OMP_WAIT_POLICY=PASSIVE .venv/bin/python benchmarks/bench_ablation.py --seconds 60 --out out/ablation
        [--threads 2] [--variants "InterIR-S,no P/Q data term,..."] [--recipe OPTION.yml] [--data ROOT] [--quick]

The base is the InterIR-S MiniCDD CPU recipe (:data:`RECIPE`), read when the script runs: its ``network_g``,
data, loss, optimiser and schedule are the ones every variant trains with. Each variant of :data:`VARIANTS`
overrides some ``network_g`` keys (the flags InterIR has for this ablation); ``plain residual stack`` replaces the
network by :class:`~interir_plugin.archs.plain_arch.PlainResidualNet` with the recipe's channels, feature width
and unshuffle factor and the number of blocks whose multiply-adds (mmengine, 3x256x256) come closest to the
recipe's InterIR-S. Every variant, in turn:

1. trains with BasicSR's trainer (:func:`interir_plugin.tools.pipelines.run_basicsr`) from an option file written
   from the recipe (``<out>/options/train_<slug>.yml``, experiment ``ablation_<slug>``) with
   ``train.time_budget = --seconds`` and no validation (``val: ~``, no ``val_*`` datasets), on the CPU with
   ``--threads`` torch threads; the run ends on its time budget (:class:`TimeBudgetReached`: iterations and
   training seconds) with ``experiments/ablation_<slug>/models/net_g_latest.pth``;
2. is scored on MiniCDD's held-out split (``protocol: minicdd, protocol_split: heldout``) through BasicSR's test
   pipeline with ``UnfoldingRestorationModel`` (:func:`interir_plugin.tools.bench.bench`): PSNR and SSIM per
   label and their mean over labels, with the degraded input's row; parameters, multiply-adds and latency
   (1x3x256x256) of each network come with it.

Outputs in ``--out``: ``ablation.json`` (every figure, the command, the date, the torch threads),
``ablation.md`` (the tables), ``leaderboard.{md,csv,png}`` (:func:`bench`'s), ``ablation.log`` (BasicSR's log
of every run), ``options/``, ``experiments/``, ``results/``. The JSON and the summary table are also printed.
MiniCDD is read from ``--data`` (default: the recipe's ``protocol_root``, relative to the current directory) and
built there first if absent (``interir prepare minicdd``).

``--quick`` checks the wiring (tests/test_benchmarks.py) in a temporary folder: 1 s of training, three variants
(InterIR-S, one flag, the plain stack) of an 8-channel InterIR (the recipe's stages) at 32x32 patches, two
held-out labels, 1 thread; its numbers mean nothing.
"""
import argparse
import copy
import datetime
import inspect
import json
import os
import re
import shlex
import sys
import tempfile
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import add_quick_flag, document, emit, set_threads, steady_malloc  # noqa: E402

import interir_plugin  # noqa: E402,F401  (shims and registration)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
#: The base recipe, relative to the repository root.
RECIPE = 'options/train/InterIR/train_InterIR-S_MiniCDD.yml'
#: The variant that replaces InterIR by :class:`PlainResidualNet` of equal multiply-adds.
PLAIN = 'plain residual stack'
#: Variant name -> ``network_g`` overrides of the recipe's InterIR (:data:`PLAIN`: None, built by
#: :func:`plain_network`). The first is the recipe as it is.
VARIANTS = {
    'InterIR-S': {},
    'no expert mix': {'num_experts': 1},
    'no prior gates': {'prior_gates': False},
    'no frequency branch': {'freq_branch': False},
    'no P/Q data term': {'data_term': False},
    'first-order step': {'second_order': False},
    'residual head': {'head': 'residual', 'recognise': False},
    PLAIN: None,
}
#: Held-out scoring set (MiniCDD's decision split; its root is filled in).
HELDOUT = {'name': 'MiniCDD_heldout', 'type': 'MultiDegradationPairedDataset', 'protocol': 'minicdd',
           'protocol_split': 'heldout', 'io_backend': {'type': 'disk'}}
#: ``--quick``: training seconds, variants, network_g and train-set overrides, held-out labels, threads.
QUICK = {'seconds': 1, 'variants': ('InterIR-S', 'no P/Q data term', PLAIN),
         'network_g': {'num_feat': 8, 'num_experts': 2, 'expand': 1},
         'train_set': {'gt_size': 32, 'batch_size_per_gpu': 2}, 'labels': ('haze', 'low_haze_rain'), 'threads': 1}


def slug(name):
    """``'no P/Q data term'`` -> ``'no_P_Q_data_term'``: a variant's file and experiment name part."""
    return re.sub(r'[^A-Za-z0-9-]+', '_', name).strip('_')


def select_variants(spec):
    """Variant names from a comma-separated ``--variants`` value (names or slugs, any case; None: all), in
    :data:`VARIANTS` order; an unknown name raises ``ValueError`` listing the known ones."""
    if not spec:
        return list(VARIANTS)
    known = {key.lower(): name for name in VARIANTS for key in (name, slug(name))}
    wanted = [w.strip() for w in spec.split(',') if w.strip()]
    unknown = [w for w in wanted if w.lower() not in known]
    if unknown or not wanted:
        raise ValueError(f'unknown variant(s) {unknown}; known: {", ".join(VARIANTS)}')
    chosen = {known[w.lower()] for w in wanted}
    return [name for name in VARIANTS if name in chosen]


def _interir_arg(network_g, key):
    """``network_g[key]``, or InterIR's default for it when the recipe leaves it out."""
    from interir_plugin.archs.interir_arch import InterIR

    return network_g.get(key, inspect.signature(InterIR).parameters[key].default)


def plain_network(network_g, shape=(3, 256, 256)):
    """The :class:`PlainResidualNet` ``network_g`` of InterIR's ``network_g`` lifting and head whose multiply-adds
    come closest to the InterIR's at ``shape`` (mmengine's count; ties: fewer blocks).

    The count is affine in the number of blocks, so two counts (0 and 1 block) place it; the chosen network is
    counted once more and the result reports that count.

    Args:
        network_g (dict): The InterIR ``network_g`` (``type: InterIR``).
        shape (tuple[int]): ``(C, H, W)`` of the count. Default: (3, 256, 256), the leaderboard's.

    Returns:
        tuple[dict, dict]: The plain ``network_g``, and ``target_macs``, ``base_macs`` (0 blocks),
        ``block_macs`` (one block), ``num_blocks``, ``macs``, ``relative_difference`` (``macs / target - 1``).
    """
    from basicsr.archs import build_network

    from interir_plugin.utils.complexity import model_complexity

    if network_g.get('type') != 'InterIR':
        raise ValueError(f'plain_network: the recipe network must be InterIR, got {network_g.get("type")!r}')
    plain = {'type': 'PlainResidualNet',
             **{k: _interir_arg(network_g, k) for k in ('num_in_ch', 'num_out_ch', 'num_feat', 'unshuffle')}}

    def macs(opt):
        return model_complexity(build_network(copy.deepcopy(opt)), shape)['macs']

    target = macs(network_g)
    base, one = macs({**plain, 'num_blocks': 0}), macs({**plain, 'num_blocks': 1})
    block = one - base
    n = max(0, round((target - base) / block))
    n = min((m for m in (n - 1, n, n + 1) if m >= 0), key=lambda m: (abs(base + m * block - target), m))
    plain['num_blocks'] = n
    counted = macs(plain)
    return plain, {'target_macs': target, 'base_macs': base, 'block_macs': block, 'num_blocks': n, 'macs': counted,
                   'relative_difference': counted / target - 1}


def variant_train_option(recipe, name, network_g, seconds, data_root=None, train_set=None, single_output=False):
    """Training options of one variant: the recipe with ``network_g``, ``train.time_budget = seconds``, no
    validation, on the CPU, in experiment ``ablation_<slug>``.

    Args:
        recipe (dict): The base recipe's options (not modified).
        name (str): Variant name.
        network_g (dict): The variant's network.
        seconds (float): Training seconds.
        data_root (str | None): ``protocol_root`` of every protocol dataset (None: the recipe's). Default: None.
        train_set (dict | None): Overrides of the train dataset's options (``--quick``). Default: None.
        single_output (bool): The network returns one image (the plain stack): of the recipe's
            ``train.stage_weights`` (one per stage output) only the final output's weight stays, as the MiniCDD
            recipes weigh single-output networks. Default: False.

    Returns:
        dict: The options.
    """
    opt = copy.deepcopy(recipe)
    opt.update(name=f'ablation_{slug(name)}', num_gpu=0, network_g=copy.deepcopy(network_g), val=None)
    opt['train']['time_budget'] = seconds
    if single_output and opt['train'].get('stage_weights'):
        opt['train']['stage_weights'] = opt['train']['stage_weights'][-1:]
    # no validation while the clock runs: only the training set stays (the recipe's val_* sets would be loaded)
    opt['datasets'] = {phase: ds for phase, ds in opt['datasets'].items() if phase.split('_')[0] == 'train'}
    for phase, ds in opt['datasets'].items():
        if data_root is not None and ds.get('protocol') is not None:
            ds['protocol_root'] = data_root
        if phase == 'train':
            ds.update(train_set or {})
    return opt


def recipe_data_root(recipe_path):
    """The MiniCDD root of a recipe: its train set's ``protocol_root`` (default ``datasets/MiniCDD``)."""
    from interir_plugin.tools.options import load_option_file

    return load_option_file(recipe_path)['datasets']['train'].get('protocol_root') or 'datasets/MiniCDD'


def ensure_minicdd(root, log):
    """Build MiniCDD at ``root`` unless its splits exist (as ``interir prepare minicdd``)."""
    from interir_plugin.data.preparation import MINICDD_SPLITS, make_minicdd

    if all(os.path.isdir(os.path.join(root, split)) for split, _ in MINICDD_SPLITS):
        return
    log(f'building MiniCDD at {root} ...')
    make_minicdd(root, seed=0, force=True)


def train_variant(name, opt, out_dir, opt_dir, log):
    """Write ``opt`` and train it with BasicSR's trainer until its time budget ends the run.

    Args:
        name (str): Variant name.
        opt (dict): Its training options (:func:`variant_train_option`).
        out_dir (str): Root of BasicSR's ``experiments/``.
        opt_dir (str): Folder of the written option file.
        log (callable): Receives progress lines.

    Returns:
        dict: ``experiment``, ``option_file``, ``weights``, ``iters``, ``train_seconds`` (the budget's clock),
        ``wall_seconds`` and ``process_cpu_seconds`` of the whole run (data set and model building included).
    """
    from interir_plugin.tools.demo import write_option
    from interir_plugin.tools.pipelines import run_basicsr

    path = write_option(os.path.join(opt_dir, f'train_{slug(name)}.yml'), opt,
                        f'written by benchmarks/bench_ablation.py: {name}, {opt["train"]["time_budget"]} s of training')
    log(f'training {name} ({opt["network_g"]["type"]}) for {opt["train"]["time_budget"]:g} s ...')
    t0, c0 = time.perf_counter(), time.process_time()
    spent = run_basicsr('train', path, out_dir)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    weights = os.path.join(out_dir, 'experiments', opt['name'], 'models', 'net_g_latest.pth')
    if spent is None or not os.path.isfile(weights):
        raise RuntimeError(f'{name}: training did not end on its time budget with {weights}; see the log in '
                           f'{out_dir} (is train.total_iter large enough for the budget?)')
    log(f'    {name}: {spent.iters} iterations in {spent.seconds:.1f} s of training')
    return {'experiment': opt['name'], 'option_file': path, 'weights': weights, 'iters': spent.iters,
            'train_seconds': spent.seconds, 'wall_seconds': wall, 'process_cpu_seconds': cpu}


def _fmt(value, digits):
    return '-' if value is None else f'{value:.{digits}f}'


def tables(variants, baseline, metrics, labels):
    """Markdown of the ablation: a summary (mean over labels, cost, iterations, training seconds), then one
    table per metric with a row per label and a column per variant (and the input).

    Args:
        variants (dict): Variant name -> its ``ablation.json`` entry.
        baseline (dict): The input's scores (``mean``, ``per_label``).
        metrics (list[str]): Metric names (``psnr``, ``ssim``).
        labels (list[str]): Label names.

    Returns:
        tuple[list[dict], list[str]]: The summary rows (for :func:`emit`) and the markdown lines.
    """
    from interir_plugin.tools.leaderboard import IDENTITY_NAME
    from interir_plugin.utils.tables import markdown_table

    digits = {'psnr': 2, 'ssim': 4}
    summary = [{'variant': IDENTITY_NAME, 'GMACs': '-', 'params (M)': '-', 'iterations': '-', 'training s': '-',
                **{f'{m.upper()} mean': _fmt(baseline['mean'][m], digits.get(m, 4)) for m in metrics}}]
    summary += [{'variant': name, 'GMACs': _fmt(v['gmacs'], 3), 'params (M)': _fmt(v['params'] / 1e6, 3),
                 'iterations': v['iters'], 'training s': _fmt(v['train_seconds'], 1),
                 **{f'{m.upper()} mean': _fmt(v['mean'][m], digits.get(m, 4)) for m in metrics}}
                for name, v in variants.items()]
    columns = list(summary[0])
    lines = markdown_table(columns, [[row[c] for c in columns] for row in summary])
    for m in metrics:
        header = ['label', 'input', *variants]
        rows = [[label, _fmt(baseline['per_label'][label][m], digits.get(m, 4)),
                 *(_fmt(v['per_label'][label][m], digits.get(m, 4)) for v in variants.values())] for label in labels]
        rows.append(['**mean**', _fmt(baseline['mean'][m], digits.get(m, 4)),
                     *(_fmt(v['mean'][m], digits.get(m, 4)) for v in variants.values())])
        lines += ['', f'{m.upper()} per label', '', *markdown_table(header, rows)]
    return summary, lines


def run(out_dir, seconds, names, recipe_path, data_root=None, quick=False, log=print):
    """Train every variant of ``names`` in turn, then score them all and the input on the held-out split.

    Args:
        out_dir (str): Output folder (and root of BasicSR's ``experiments/`` and ``results/``).
        seconds (float): Training seconds of every variant.
        names (list[str]): Variants (keys of :data:`VARIANTS`).
        recipe_path (str): The base recipe.
        data_root (str | None): MiniCDD root (built there if absent; None: the recipe's). Default: None.
        quick (bool): :data:`QUICK` network, train set and labels. Default: False.
        log (callable): Receives progress lines. Default: print.

    Returns:
        tuple[dict, list[dict], list[str]]: The results (``ablation.json`` less the fields :func:`main` adds), the
        summary rows and the markdown lines of :func:`tables`.
    """
    from interir_plugin.tools.bench import bench
    from interir_plugin.tools.console import route_basicsr_log
    from interir_plugin.tools.demo import make_test_option, write_option
    from interir_plugin.tools.options import load_option_file

    recipe = load_option_file(recipe_path)
    data_root = recipe_data_root(recipe_path) if data_root is None else data_root
    opt_dir = os.path.join(out_dir, 'options')
    os.makedirs(opt_dir, exist_ok=True)
    route_basicsr_log(os.path.join(out_dir, 'ablation.log'))
    ensure_minicdd(data_root, log)
    base_net = {**recipe['network_g'], **(QUICK['network_g'] if quick else {})}
    plain_net, plain_match = plain_network(base_net) if PLAIN in names else (None, None)
    if plain_match:
        log(f'{PLAIN}: {plain_match["num_blocks"]} blocks, {plain_match["macs"] / 1e9:.3f} GMACs '
            f'(InterIR {plain_match["target_macs"] / 1e9:.3f})')
    heldout = {**HELDOUT, 'protocol_root': data_root, **({'protocol_labels': list(QUICK['labels'])} if quick else {})}

    trained, test_files = {}, []
    for name in names:
        net = plain_net if name == PLAIN else {**base_net, **VARIANTS[name]}
        opt = variant_train_option(recipe, name, net, seconds, data_root, QUICK['train_set'] if quick else None,
                                   single_output=name == PLAIN)
        trained[name] = {'network_g': net, **train_variant(name, opt, out_dir, opt_dir, log)}
        test_files.append(write_option(os.path.join(opt_dir, f'test_{slug(name)}.yml'),
                                       make_test_option(opt['name'], opt, trained[name]['weights'], heldout),
                                       f'written by benchmarks/bench_ablation.py: {name} on the held-out split'))
    log(f'scoring {len(names)} variant(s) and the input on {heldout["name"]} ...')
    board = bench(test_files, out_dir, root=out_dir, rerun=True, device='cpu', repeats=1 if quick else 3,
                  warmup=0 if quick else 1, progress=False, log=log,
                  training={t['experiment']: {k: t[k] for k in ('iters', 'train_seconds')} for t in trained.values()})
    by_model = {row['model']: row for row in board['rows']}
    rows = [by_model[t['experiment']] for t in trained.values()]
    baseline = next(row for row in board['rows'] if row['network'] == '-')
    metrics, labels = rows[0]['metrics'], rows[0]['labels']
    variants = {name: {**t, **{k: row[k] for k in ('params', 'gmacs', 'latency_ms', 'device', 'images', 'mean',
                                                      'per_label')}}
                for (name, t), row in zip(trained.items(), rows)}
    summary, lines = tables(variants, baseline, metrics, labels)
    results = {'recipe': recipe_path, 'recipe_network_g': recipe['network_g'], 'seconds': seconds,
               'data_root': data_root, 'dataset': heldout, 'metrics': metrics, 'labels': labels,
               'variants': variants, 'plain_match': plain_match,
               'input': {k: baseline[k] for k in ('images', 'mean', 'per_label')},
               'leaderboard': {k: board[k] for k in ('md', 'csv', 'png')}}
    return results, summary, lines


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--seconds', type=float, default=60, help='training seconds of every variant')
    parser.add_argument('--threads', type=int, default=None, help='torch intra-op threads (default 2; --quick: 1)')
    parser.add_argument('--variants', default=None,
                        help=f'comma-separated subset of: {", ".join(VARIANTS)} (default: all)')
    parser.add_argument('--out', default=None, help='output folder (default out/ablation; --quick: a temporary one)')
    parser.add_argument('--recipe', default=os.path.join(REPO, RECIPE), help='base training option file')
    parser.add_argument('--data', default=None, help="MiniCDD root (default: the recipe's protocol_root)")
    add_quick_flag(parser)
    args = parser.parse_args()
    try:
        names = list(QUICK['variants']) if args.quick and args.variants is None else select_variants(args.variants)
    except ValueError as err:
        parser.error(str(err))
    if not args.seconds > 0:
        parser.error(f'--seconds must be positive, got {args.seconds}')
    seconds = QUICK['seconds'] if args.quick else args.seconds
    threads = args.threads or (QUICK['threads'] if args.quick else 2)
    malloc = 'steady' if steady_malloc() else 'default'
    set_threads(threads)
    torch.manual_seed(0)
    started, t0, load_before = datetime.datetime.now().astimezone(), time.perf_counter(), os.getloadavg()

    def log(message):
        print(message, file=sys.stderr, flush=True)  # stdout carries the JSON document and the table

    with tempfile.TemporaryDirectory() as tmp:
        out_dir = args.out or (tmp if args.quick else os.path.join('out', 'ablation'))
        data = args.data
        if args.quick and data is None:  # the recipe's MiniCDD when it is there, else one built in the temp folder
            root = recipe_data_root(args.recipe)
            data = root if os.path.isdir(os.path.join(root, 'heldout')) else os.path.join(tmp, 'MiniCDD')
        results, summary, lines = run(out_dir, seconds, names, args.recipe, data, args.quick, log)
        env = {k: os.environ.get(k) for k in ('OMP_NUM_THREADS', 'OMP_WAIT_POLICY')}
        command = ' '.join([*(f'{k}={v}' for k, v in env.items() if v is not None),
                            shlex.join([os.path.relpath(sys.executable), *sys.argv])])
        results = {'command': command, 'cwd': os.getcwd(), 'python': sys.executable, 'environment': env,
                   'date': started.isoformat(timespec='seconds'), 'quick': args.quick, 'malloc': malloc,
                   'loadavg_before': load_before, 'loadavg_after': os.getloadavg(),
                   'wall_seconds': time.perf_counter() - t0, **results}
        doc = document('ablation', results)
        with open(os.path.join(out_dir, 'ablation.json'), 'w', encoding='utf-8') as f:
            json.dump(doc, f, indent=1, default=float)
        header = [f'# Ablation of InterIR-S at equal CPU time ({results["date"]})', '',
                  f'`{results["command"]}`', '',
                  f'{seconds:g} s of training per variant, torch {doc["torch"]}, {doc["threads"]} thread(s); '
                  f'{results["dataset"]["name"]} ({results["input"]["images"]} images).', '']
        if results['plain_match']:
            m = results['plain_match']
            header += [f'{PLAIN}: {m["num_blocks"]} blocks, {m["macs"] / 1e9:.3f} GMACs at 3x256x256 against '
                       f'{m["target_macs"] / 1e9:.3f} for the recipe\'s InterIR ({m["relative_difference"]:+.1%}).', '']
        with open(os.path.join(out_dir, 'ablation.md'), 'w', encoding='utf-8') as f:
            f.write('\n'.join(header + lines) + '\n')
        emit('ablation', results, summary, list(summary[0]))
        print('\n' + '\n'.join(lines[len(summary) + 2:]))
        log(f'wrote {os.path.join(out_dir, "ablation.json")} and ablation.md')


if __name__ == '__main__':
    main()
