"""Ablation of InterIR-S at equal CPU time, over seeds: every variant (and every baseline network) trained for the
same seconds once per seed, scored on held-out renderers, summarised as mean and standard deviation; resumable
across sittings.

    OMP_WAIT_POLICY=PASSIVE .venv/bin/python benchmarks/bench_ablation.py --seconds 60 --seeds 10,11,12
        --out out/ablation [--threads 2] [--variants "InterIR-S,no P/Q data term,..."] [--recipe OPTION.yml]
        [--baselines OPTION.yml[,OPTION.yml...]] [--data ROOT] [--train-protocol minicdd_loro --train-split train]
        [--score-protocol minicdd_loro --score-split heldout] [--quick]

The base is the InterIR-S MiniCDD CPU recipe (:data:`RECIPE`), read when the script runs: its ``network_g``,
data, loss, optimiser and schedule are the ones every variant trains with. :func:`variants` derives the variants
from the recipe's ``network_g``: fixed overrides (no expert mix, residual head), one variant per on/off flag of
:data:`TOGGLES` that turns the recipe's value over and is named after what it does to the recipe (``no prior
gates`` where the recipe has them, ``frequency branch`` where it drops it), and ``plain residual stack``, which
replaces the network by :class:`~interir_plugin.archs.plain_arch.PlainResidualNet` with the recipe's channels,
feature width and unshuffle factor and the number of blocks whose multiply-adds (mmengine, 3x256x256) come
closest to the recipe's InterIR-S. Every variant's network is built once before any training (an invalid one
stops the script).

``--baselines`` adds rows of other networks (:func:`load_baselines`): each a training option file (e.g.
``options/train/DGUNet/train_DGUNet-S_MiniCDD.yml``) whose network, loss, ``stage_weights``, optimiser and
schedule are its own, treated exactly as the variants (the same seconds, seeds, training-set override, scoring,
records, resume and report; the verdict against InterIR-S). Its row is named after its network type and the part
of its file name that starts with it (:func:`baseline_name`: ``DGUNet-S``, ``RIDNet``); its records hold the file
(``baseline``). ``--variants InterIR-S`` runs InterIR-S against the baselines only.

For every seed of ``--seeds`` (default 10, 11, 12), every variant, then every baseline, in turn (seed by seed, so a
partial ablation has every row at the first seeds):

1. trains with BasicSR's trainer (:func:`interir_plugin.tools.pipelines.run_basicsr`) from an option file written
   from the recipe, or a baseline's file (``<out>/options/train_ablation_<slug>_s<seed>.yml``, experiment
   ``ablation_<slug>_s<seed>``) with ``manual_seed`` and the training set's ``seed`` set to the seed, the training
   set on ``--train-protocol`` / ``--train-split`` (default ``minicdd_loro`` ``train``: the training renderers;
   ``train_heldout_renderers``: the held-out ones; the file's other train-set keys stay), ``train.time_budget =
   --seconds`` and no validation, on the CPU with ``--threads`` torch threads; the run ends on its time budget
   (:class:`TimeBudgetReached`: iterations and training seconds);
2. is scored on ``--score-protocol`` / ``--score-split`` (default ``minicdd_loro`` ``heldout``: held-out photos
   degraded by held-out renderers) through BasicSR's test pipeline (:func:`interir_plugin.tools.bench.bench`):
   PSNR, SSIM and harm rate per label and their mean over labels, parameters, multiply-adds and latency;
3. is appended, only then, as one JSON line to ``<out>/ablation_runs.jsonl`` (atomically: the file is replaced,
   never left half-written). A later invocation with the same ``--out`` skips the (variant, seed) runs found there
   and says so; a run killed before its line was written runs again from scratch. All runs of one file must share
   the setting (seconds, threads, recipe, splits, quick), else the script stops naming the difference.

After every run, ``ablation.md`` and ``ablation.json`` are written anew from every record of the file
(:mod:`_ablation_report`: per variant or baseline mean and sample standard deviation over its seeds of PSNR, SSIM,
harm rate and iterations, the PSNR difference to InterIR-S with the sum of the two standard deviations and the
verdict ``separated`` / ``within the spread``; the mean PSNR per label; every run); at the end they are printed. Other
outputs in ``--out``: ``ablation.log`` (BasicSR's log), ``options/``, ``experiments/``, ``results/``,
``runs/<experiment>/`` (each run's leaderboard). MiniCDD is read from ``--data`` (default: the recipe's
``protocol_root``, relative to the current directory) and built there first if any of its splits (LORO ones
included) is absent.

``--quick`` checks the wiring (tests/test_benchmarks.py) in a temporary folder: two seeds, three variants
(InterIR-S, one flag, the plain stack) of an 8-channel InterIR and one baseline (a narrowed RIDNet from
``options/bench/train_RIDNet_MiniCDD.yml``) at 32x32 patches, 1 s of training, two scored labels, 1 thread; it runs
twice in the same folder, first the first seed only, then both, so the second pass skips the first seed's runs. Its
numbers mean nothing.
"""
import argparse
import copy
import dataclasses
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
import _ablation_report as report  # noqa: E402
from _common import add_quick_flag, document, emit, set_threads, steady_malloc  # noqa: E402

import interir_plugin  # noqa: E402,F401  (shims and registration)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
#: The base recipe, relative to the repository root.
RECIPE = 'options/train/InterIR/train_InterIR-S_MiniCDD.yml'
#: The recipe as it is: the variant the others are compared with (first in the tables).
BASE = 'InterIR-S'
#: The variant that replaces InterIR by :class:`PlainResidualNet` of equal multiply-adds.
PLAIN = 'plain residual stack'
#: InterIR's on/off flags, each ablated by turning the recipe's value over: flag -> (the variant's name where the
#: recipe has the flag on, its name where the recipe has it off).
TOGGLES = {'prior_gates': ('no prior gates', 'prior gates'),
           'freq_branch': ('no frequency branch', 'frequency branch'),
           'data_term': ('no P/Q data term', 'P/Q data term'),
           'second_order': ('first-order step', 'second-order step'),
           'route_by_presence': ('no presence routing', 'presence routing'),
           'streaks_by_active_set': ('no active-set streaks', 'active-set streaks'),
           'recognise': ('no recogniser', 'recogniser')}
#: Flag -> the flag it needs on (InterIR refuses it otherwise): turning the latter off turns the former off too.
NEEDS = {'route_by_presence': 'recognise'}
#: Variants of fixed ``network_g`` overrides (the residual head has no maps to gate, route by or put streaks in).
FIXED = {BASE: {}, 'no expert mix': {'num_experts': 1},
         'residual head': {'head': 'residual', 'recognise': False, 'route_by_presence': False,
                           'streaks_by_active_set': False}}
#: Table order: a name of :data:`FIXED`, a flag of :data:`TOGGLES` or :data:`PLAIN`.
LAYOUT = (BASE, 'no expert mix', 'prior_gates', 'freq_branch', 'data_term', 'second_order', 'residual head',
          'route_by_presence', 'streaks_by_active_set', 'recognise', PLAIN)
#: Default ``--seeds``.
SEEDS = (10, 11, 12)
#: Default training and scoring sets (``protocol``, ``protocol_split``): the leave-one-renderer-out protocol.
TRAIN_SPLIT, SCORE_SPLIT = ('minicdd_loro', 'train'), ('minicdd_loro', 'heldout')
#: ``--quick``: training seconds, seeds, variants, baselines (RIDNet: small, cheap on the CPU), network_g
#: overrides (InterIR's; a baseline's by its network type), train-set overrides, scored labels, threads.
QUICK = {'seconds': 1, 'seeds': (10, 11), 'variants': (BASE, 'no P/Q data term', PLAIN),
         'baselines': ('options/bench/train_RIDNet_MiniCDD.yml',),
         'network_g': {'num_feat': 8, 'num_experts': 2, 'expand': 1},
         'baseline_network_g': {'RIDNet': {'mid_channels': 16, 'num_block': 1}},
         'train_set': {'gt_size': 32, 'batch_size_per_gpu': 2}, 'labels': ('haze', 'low_haze_rain'), 'threads': 1}


def slug(name):
    """``'no P/Q data term'`` -> ``'no_P_Q_data_term'``: a variant's file and experiment name part."""
    return re.sub(r'[^A-Za-z0-9-]+', '_', name).strip('_')


def experiment_name(name, seed):
    """``ablation_<slug>_s<seed>``: the experiment (and ``results/``) name of one run."""
    return f'ablation_{slug(name)}_s{seed}'


def variants(network_g):
    """The variants of an InterIR ``network_g`` in :data:`LAYOUT` order: name -> ``network_g`` overrides
    (:data:`PLAIN`: None, built by :func:`plain_network`). A flag of :data:`TOGGLES` gives the variant that turns
    the recipe's value (or InterIR's default) over, named after what it does; turning a flag off also turns off
    the flags that need it (:data:`NEEDS`)."""
    table = {}
    for entry in LAYOUT:
        if entry not in TOGGLES:
            table[entry] = FIXED.get(entry)
            continue
        on = bool(_interir_arg(network_g, entry))
        table[TOGGLES[entry][0 if on else 1]] = {entry: not on, **{flag: False for flag, need in NEEDS.items()
                                                                  if on and need == entry}}
    return table


def select_variants(spec, table):
    """Variant names from a comma-separated ``--variants`` value (names or slugs, any case; None: all), in the
    order of ``table`` (:func:`variants`); an unknown name raises ``ValueError`` listing the known ones."""
    if not spec:
        return list(table)
    known = {key.lower(): name for name in table for key in (name, slug(name))}
    wanted = [w.strip() for w in spec.split(',') if w.strip()]
    unknown = [w for w in wanted if w.lower() not in known]
    if unknown or not wanted:
        raise ValueError(f'unknown variant(s) {unknown}; known for this recipe: {", ".join(table)}')
    chosen = {known[w.lower()] for w in wanted}
    return [name for name in table if name in chosen]


def parse_seeds(spec):
    """``'10,11,12'`` -> ``[10, 11, 12]``; ``ValueError`` naming the value unless distinct non-negative ints."""
    try:
        seeds = [int(s) for s in spec.split(',') if s.strip()]
    except ValueError:
        seeds = []
    if not seeds or min(seeds) < 0 or len(set(seeds)) != len(seeds):
        raise ValueError(f'--seeds must be distinct non-negative integers separated by commas, got {spec!r}')
    return seeds


def check_networks(networks, kind='variant', where='on this recipe'):
    """Build every ``network_g`` of ``networks`` (name -> options) once; ``ValueError`` naming the row (``kind``
    and name) whose network its constructor refuses, and ``where`` it comes from."""
    from basicsr.archs import build_network

    for name, net in networks.items():
        try:
            build_network(copy.deepcopy(net))
        except (ValueError, TypeError, KeyError) as err:
            raise ValueError(f'{kind} {name!r} is not a valid network {where} ({net}): {err}') from err


def option_id(path):
    """An option file as the records name it: relative to the repository when inside it, else absolute."""
    path = os.path.abspath(path)
    rel = os.path.relpath(path, REPO)
    return path if rel.startswith('..') else rel


def baseline_name(path, network_type):
    """A baseline's row name: the part of its file name (split at ``_``) that starts with its network type
    (``train_DGUNet-S_MiniCDD.yml``, ``DGUNet`` -> ``DGUNet-S``), else the type (``RIDNet``)."""
    stem = os.path.splitext(os.path.basename(path))[0]
    return next((part for part in stem.split('_') if part.lower().startswith(network_type.lower())), network_type)


def load_baselines(spec, taken=(), overrides=None):
    """The baselines of a comma-separated ``--baselines`` value (None: none), each network built once.

    Args:
        spec (str | None): Training option files of other networks.
        taken (iterable[str]): Row names already in use (the recipe's variants). Default: none.
        overrides (dict | None): Network type -> ``network_g`` overrides (``--quick``'s). Default: None.

    Returns:
        dict: Row name (:func:`baseline_name`) -> ``file`` (:func:`option_id`) and ``options`` (the file as read).

    Raises:
        ValueError: A file is unreadable, has no ``train`` options or no training set read from a ``protocol``,
            its network does not build, or its row name is taken (naming the file).
    """
    from interir_plugin.tools.options import load_option_file

    baselines, taken = {}, set(taken)
    for path in [p.strip() for p in (spec or '').split(',') if p.strip()]:
        try:
            opt = load_option_file(path)
        except FileNotFoundError as err:
            raise ValueError(f'--baselines: {err}') from err
        train_set = (opt.get('datasets') or {}).get('train')
        if not isinstance(opt.get('train'), dict) or not isinstance(train_set, dict) or 'protocol' not in train_set:
            raise ValueError(f'--baselines: {path} must be a training option file whose datasets.train reads a '
                             f'protocol (protocol: ...), got train set {train_set!r}')
        opt['network_g'].update((overrides or {}).get(opt['network_g']['type'], {}))
        name = baseline_name(path, opt['network_g']['type'])
        if name in taken:
            raise ValueError(f'--baselines: {path} gives the row name {name!r}, already taken '
                             f'({", ".join(sorted(taken))}); rename the file')
        check_networks({name: opt['network_g']}, 'baseline', f'in {path}')
        taken.add(name)
        baselines[name] = {'file': option_id(path), 'options': opt}
    return baselines


def check_baselines(records, baselines, path):
    """``ValueError`` if a record of ``path`` bears the row name of a baseline of ``baselines`` (:func:`load_baselines`)
    but came from another option file (or is a variant): a row's runs must all be of one network."""
    for r in records:
        if r['variant'] in baselines and r.get('baseline') != baselines[r['variant']]['file']:
            raise ValueError(f'{path} holds runs of {r["variant"]!r} from {r.get("baseline") or "the recipe"}, not '
                             f'from {baselines[r["variant"]]["file"]}: use another --out, or rename the file')


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




def variant_train_option(recipe, name, network_g, seconds, seed=None, data_root=None, train_set=None,
                         single_output=False):
    """Training options of one run: the recipe with ``network_g``, ``train.time_budget = seconds``, no
    validation, on the CPU, in experiment :func:`experiment_name`.

    Args:
        recipe (dict): The base recipe's options (not modified).
        name (str): Variant name.
        network_g (dict): The variant's network.
        seconds (float): Training seconds.
        seed (int | None): ``manual_seed`` and the training set's ``seed`` (its synthesis draws), and the
            experiment's ``_s<seed>`` suffix (None: the recipe's seeds, experiment ``ablation_<slug>``).
            Default: None.
        data_root (str | None): ``protocol_root`` of every protocol dataset (None: the recipe's). Default: None.
        train_set (dict | None): Overrides of the training set's options (its ``protocol`` and
            ``protocol_split``; ``--quick``'s patch and batch size); its other keys stay the recipe's.
            Default: None.
        single_output (bool): The network returns one image (the plain stack): of the recipe's
            ``train.stage_weights`` (one per stage output) only the final output's weight stays, as the MiniCDD
            recipes weigh single-output networks. Default: False.

    Returns:
        dict: The options.
    """
    opt = copy.deepcopy(recipe)
    opt.update(name=f'ablation_{slug(name)}' if seed is None else experiment_name(name, seed), num_gpu=0,
               network_g=copy.deepcopy(network_g), val=None)
    opt['train']['time_budget'] = seconds
    if seed is not None:
        opt['manual_seed'] = seed
    if single_output and opt['train'].get('stage_weights'):
        opt['train']['stage_weights'] = opt['train']['stage_weights'][-1:]
    # no validation while the clock runs: only the training set stays (the recipe's val_* sets would be loaded)
    opt['datasets'] = {phase: ds for phase, ds in opt['datasets'].items() if phase.split('_')[0] == 'train'}
    for phase, ds in opt['datasets'].items():
        if phase == 'train':
            ds.update(copy.deepcopy(train_set or {}), **({} if seed is None else {'seed': seed}))
        if data_root is not None and ds.get('protocol') is not None:
            ds['protocol_root'] = data_root
    return opt


def score_dataset(protocol, split, root, labels=None):
    """The scoring set's options: ``split`` of ``protocol`` at ``root`` (only ``labels``, if given)."""
    return {'name': f'{protocol}_{split}', 'type': 'MultiDegradationPairedDataset', 'protocol': protocol,
            'protocol_split': split, 'protocol_root': root, 'io_backend': {'type': 'disk'},
            **({'protocol_labels': list(labels)} if labels else {})}


def recipe_data_root(recipe):
    """The MiniCDD root of a recipe (options): its train set's ``protocol_root`` (default ``datasets/MiniCDD``)."""
    return recipe['datasets']['train'].get('protocol_root') or 'datasets/MiniCDD'


def ensure_minicdd(root, log):
    """Build MiniCDD at ``root`` unless all its splits, the LORO ones included, exist (as ``interir prepare
    minicdd``; an older MiniCDD without the LORO splits is built anew, byte for byte the same elsewhere)."""
    from interir_plugin.data.preparation import make_minicdd, minicdd_split_names

    if all(os.path.isdir(os.path.join(root, split)) for split in minicdd_split_names()):
        return
    log(f'building MiniCDD at {root} ...')
    make_minicdd(root, seed=0, force=True)


def train_variant(name, opt, out_dir, opt_dir, log):
    """Write ``opt`` and train it with BasicSR's trainer until its time budget ends the run.

    Args:
        name (str): Variant name (and seed), for messages.
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

    path = write_option(os.path.join(opt_dir, f'train_{opt["name"]}.yml'), opt,
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



@dataclasses.dataclass
class Plan:
    """What the runs of one invocation share.

    Attributes:
        recipe (dict): The base recipe's options.
        out_dir (str): Output folder (root of BasicSR's ``experiments/`` and ``results/``).
        data_root (str): MiniCDD root.
        train_set (dict): Overrides of the recipe's training set (:func:`variant_train_option`).
        score_set (dict): The scoring set (:func:`score_dataset`).
        setting (dict): What every record of ``--out`` shares (:func:`_ablation_report.check_setting`).
        order (list[str]): Every variant of the recipe in table order (:func:`variants`), then the baselines.
        meta (dict): The invocation's command, date, environment (copied into ``ablation.json``).
        log (callable): Receives progress lines.
        plain_match (dict | None): :func:`plain_network`'s match, when the plain stack runs. Default: None.
        input (dict | None): The input's scores on the scoring set, once a run has measured them. Default: None.
        baselines (dict): The baselines' rows (:func:`load_baselines`). Default: none.
    """
    recipe: dict
    out_dir: str
    data_root: str
    train_set: dict
    score_set: dict
    setting: dict
    order: list
    meta: dict
    log: object
    plain_match: dict = None
    input: dict = None
    baselines: dict = dataclasses.field(default_factory=dict)

    @property
    def records(self):
        """The JSON-lines file of finished runs (:data:`_ablation_report.RECORDS` in ``out_dir``)."""
        return os.path.join(self.out_dir, report.RECORDS)


def run_one(plan, name, seed, network_g):
    """Train one variant or baseline (from its own option file) at one seed and score it; return its record
    (:mod:`_ablation_report`)."""
    from interir_plugin.tools.bench import bench
    from interir_plugin.tools.demo import make_test_option, write_option

    baseline = plan.baselines.get(name)
    opt = variant_train_option(baseline['options'] if baseline else plan.recipe, name, network_g,
                               plan.setting['seconds'], seed, plan.data_root, plan.train_set,
                               single_output=name == PLAIN)
    opt_dir = os.path.join(plan.out_dir, 'options')
    trained = train_variant(f'{name}, seed {seed}', opt, plan.out_dir, opt_dir, plan.log)
    test_file = write_option(os.path.join(opt_dir, f'test_{opt["name"]}.yml'),
                             make_test_option(opt['name'], opt, trained['weights'], plan.score_set),
                             f'written by benchmarks/bench_ablation.py: {name}, seed {seed}, scored on '
                             f'{plan.score_set["name"]}')
    quick = plan.setting['quick']
    board = bench([test_file], os.path.join(plan.out_dir, 'runs', opt['name']), root=plan.out_dir, rerun=True,
                  identity=plan.input is None, device='cpu', repeats=1 if quick else 3, warmup=0 if quick else 1,
                  progress=False, log=plan.log,
                  training={opt['name']: {k: trained[k] for k in ('iters', 'train_seconds')}})
    row = board['rows'][0]
    if plan.input is None:  # the input's row follows the run's
        plan.input = {k: board['rows'][-1][k] for k in ('dataset', 'images', 'mean', 'per_label')}
    return {'variant': name, 'seed': seed, 'setting': plan.setting, 'network_g': network_g,
            'baseline': baseline['file'] if baseline else None,
            'plain_match': plan.plain_match if name == PLAIN else None, **trained,
            **{k: row[k] for k in ('params', 'gmacs', 'latency_ms', 'device', 'dataset', 'images', 'metrics',
                                   'labels', 'mean', 'per_label')},
            'input': plan.input, 'finished': datetime.datetime.now().astimezone().isoformat(timespec='seconds')}


def run(plan, names, seeds, networks):
    """Run every (variant, seed) not yet in ``<out>/ablation_runs.jsonl``, seed by seed, appending each record
    after its scoring and rendering the report anew after each.

    Args:
        plan (Plan): The invocation.
        names (list[str]): Variants and baselines to run, in order.
        seeds (list[int]): Seeds to run.
        networks (dict): Row name -> ``network_g``.

    Returns:
        dict: ``ran`` and ``skipped``: ``[variant, seed]`` pairs, in order.
    """
    path = plan.records
    records = report.read_records(path)
    report.check_setting(records, plan.setting, path)
    done = {(r['variant'], r['seed']): r for r in records}
    resume = {'ran': [], 'skipped': []}
    for seed in seeds:
        for name in names:
            if (name, seed) in done:
                r = done[name, seed]
                plan.log(f'skipping {name}, seed {seed}: finished in {path} ({r["iters"]} iterations, '
                         f'PSNR {r["mean"]["psnr"]:.2f} dB)')
                resume['skipped'].append([name, seed])
                continue
            report.append_record(path, run_one(plan, name, seed, networks[name]))
            resume['ran'].append([name, seed])
            render(plan, [resume])
    return resume


def render(plan, passes):
    """Write ``ablation.json`` and ``ablation.md`` from every record of ``--out``.

    Args:
        plan (Plan): The invocation.
        passes (list[dict]): :func:`run`'s ``ran`` / ``skipped`` of each pass of this invocation.

    Returns:
        tuple[dict, list[dict], list[str]]: The results (``ablation.json`` less :func:`document`'s fields), the
        summary rows and the markdown lines of :func:`_ablation_report.report`.
    """
    records = report.read_records(plan.records)
    summary, rows, lines = report.report(records, plan.order, BASE)
    plain = next((r['plain_match'] for r in records if r.get('plain_match')), None)
    baselines = {r['variant']: r['baseline'] for r in records if r.get('baseline')}
    results = {**plan.meta, 'loadavg_after': os.getloadavg(), 'setting': plan.setting, 'data_root': plan.data_root,
               'train_set': plan.train_set, 'dataset': plan.score_set, 'records': report.RECORDS,
               'passes': passes, 'seeds': sorted({r['seed'] for r in records}), 'rule': report.RULE,
               'variants': summary, 'baselines': baselines, 'plain_match': plain,
               'input': records[-1]['input'] if records else None, 'runs': records}
    doc = document('ablation', results)
    with open(os.path.join(plan.out_dir, 'ablation.json'), 'w', encoding='utf-8') as f:
        json.dump(doc, f, indent=1, default=float)
    s = plan.setting
    header = [f'# Ablation of InterIR-S{" and baselines" if baselines else ""} at equal CPU time, over seeds '
              f'({plan.meta["date"]})', '',
              f'`{plan.meta["command"]}`', '',
              f'{s["seconds"]:g} s of training per run, torch {doc["torch"]}, {s["threads"]} thread(s); trained on '
              f'{s["train"][0]} {s["train"][1]}, scored on {s["score"][0]} {s["score"][1]}'
              + (f' ({results["input"]["images"]} images)' if records else '') + f'; {len(records)} finished run(s).',
              '']
    if baselines:
        header += ['Baselines, each with its own option file\'s network, loss, stage weights, optimiser and schedule: '
                   + ', '.join(f'{name} (`{file}`)' for name, file in baselines.items()) + '.', '']
    if plain:
        header += [f'{PLAIN}: {plain["num_blocks"]} blocks, {plain["macs"] / 1e9:.3f} GMACs at 3x256x256 against '
                   f'{plain["target_macs"] / 1e9:.3f} for the recipe\'s InterIR ({plain["relative_difference"]:+.1%}).',
                   '']
    with open(os.path.join(plan.out_dir, 'ablation.md'), 'w', encoding='utf-8') as f:
        f.write('\n'.join(header + lines) + '\n')
    return results, rows, lines


def prepare(plan, table, names):
    """MiniCDD at the plan's root (built if absent), the ``network_g`` of every variant of ``names`` (the plain
    stack matched in multiply-adds, its match in ``plan.plain_match``), every one built once to check it, and of
    every baseline (its own file's).

    Args:
        plan (Plan): The invocation.
        table (dict): :func:`variants` of the (quick) recipe network.
        names (list[str]): The variants to run.

    Returns:
        dict: Row name -> ``network_g``: the variants of ``names``, then the baselines (the order they run in).
    """
    from interir_plugin.tools.console import route_basicsr_log

    os.makedirs(os.path.join(plan.out_dir, 'options'), exist_ok=True)
    route_basicsr_log(os.path.join(plan.out_dir, 'ablation.log'))
    ensure_minicdd(plan.data_root, plan.log)
    base_net = {**plan.recipe['network_g'], **(QUICK['network_g'] if plan.setting['quick'] else {})}
    networks = {name: {**base_net, **table[name]} for name in names if name != PLAIN}
    if PLAIN in names:
        networks[PLAIN], plan.plain_match = plain_network(base_net)
        m = plan.plain_match
        plan.log(f'{PLAIN}: {m["num_blocks"]} blocks, {m["macs"] / 1e9:.3f} GMACs '
                 f'(InterIR {m["target_macs"] / 1e9:.3f})')
    check_networks(networks)
    return {**{name: networks[name] for name in names},
            **{name: b['options']['network_g'] for name, b in plan.baselines.items()}}


def parse_args():
    """The command line (:func:`main`)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--seconds', type=float, default=60, help='training seconds of every run')
    parser.add_argument('--seeds', default=None, help='comma-separated seeds, one run per variant and seed '
                        f'(default {",".join(map(str, SEEDS))}; --quick: {",".join(map(str, QUICK["seeds"]))})')
    parser.add_argument('--threads', type=int, default=None, help='torch intra-op threads (default 2; --quick: 1)')
    parser.add_argument('--variants', default=None, help='comma-separated subset of the recipe\'s variants '
                        f'(default: all; with the default recipe: {", ".join(default_variant_names())})')
    parser.add_argument('--baselines', default=None, help='comma-separated training option files of other networks, '
                        'each an extra row trained and scored as the variants are, with its own network, loss and '
                        'stage weights (e.g. options/train/DGUNet/train_DGUNet-S_MiniCDD.yml,'
                        'options/bench/train_RIDNet_MiniCDD.yml; default: none; '
                        f'--quick: {",".join(QUICK["baselines"])})')
    parser.add_argument('--out', default=None, help='output folder; rerun with the same one to resume '
                        '(default out/ablation; --quick: a temporary one)')
    parser.add_argument('--recipe', default=os.path.join(REPO, RECIPE), help='base training option file')
    parser.add_argument('--data', default=None, help="MiniCDD root (default: the recipe's protocol_root)")
    for kind, (protocol, split) in (('train', TRAIN_SPLIT), ('score', SCORE_SPLIT)):
        parser.add_argument(f'--{kind}-protocol', default=protocol, help=f'protocol of the {kind} set ({protocol})')
        parser.add_argument(f'--{kind}-split', default=split, help=f'split of the {kind} set ({split})')
    add_quick_flag(parser)
    return parser, parser.parse_args()


def default_variant_names():
    """The variant names of the default recipe (for ``--help``; the recipe is read)."""
    from interir_plugin.tools.options import load_option_file

    try:
        return list(variants(load_option_file(os.path.join(REPO, RECIPE))['network_g']))
    except (OSError, ValueError, KeyError):
        return ['(the default recipe could not be read)']


def make_plan(parser, args, tmp, log):
    """Check the command line and gather the invocation (:class:`Plan`, its baselines included), the variants to
    run and the seeds."""
    from interir_plugin.data.sources import load_protocol
    from interir_plugin.tools.options import load_option_file

    recipe = load_option_file(args.recipe)
    table = variants({**recipe['network_g'], **(QUICK['network_g'] if args.quick else {})})
    try:
        names = (list(QUICK['variants']) if args.quick and args.variants is None
                 else select_variants(args.variants, table))
        seeds = list(QUICK['seeds']) if args.quick and args.seeds is None else parse_seeds(args.seeds or
                                                                                             ','.join(map(str, SEEDS)))
        baselines = load_baselines(','.join(os.path.join(REPO, p) for p in QUICK['baselines'])
                                   if args.quick and args.baselines is None else args.baselines, table,
                                   QUICK['baseline_network_g'] if args.quick else None)
        for protocol, split in ((args.train_protocol, args.train_split), (args.score_protocol, args.score_split)):
            load_protocol(protocol, '', split)
    except (ValueError, KeyError, FileNotFoundError) as err:
        parser.error(str(err.args[0] if err.args else err))  # a KeyError's message without its quotes
    if not args.seconds > 0:
        parser.error(f'--seconds must be positive, got {args.seconds}')
    if args.threads is not None and args.threads < 1:
        parser.error(f'--threads must be >= 1, got {args.threads}')
    data = args.data
    if args.quick and data is None:  # the recipe's MiniCDD when it is complete, else one built in the temp folder
        root = recipe_data_root(recipe)
        data = root if os.path.isdir(os.path.join(root, 'loro_heldout')) else os.path.join(tmp, 'MiniCDD')
    data = recipe_data_root(recipe) if data is None else data
    setting = {'seconds': QUICK['seconds'] if args.quick else args.seconds,
               'threads': args.threads or (QUICK['threads'] if args.quick else 2), 'recipe': option_id(args.recipe),
               'train': [args.train_protocol, args.train_split], 'score': [args.score_protocol, args.score_split],
               'quick': args.quick}
    plan = Plan(recipe, args.out or (tmp if args.quick else os.path.join('out', 'ablation')), data,
                {'protocol': args.train_protocol, 'protocol_split': args.train_split,
                 **(QUICK['train_set'] if args.quick else {})},
                score_dataset(args.score_protocol, args.score_split, data, QUICK['labels'] if args.quick else None),
                setting, list(table) + list(baselines), {}, log, baselines=baselines)
    try:  # before any work: the runs already in --out must be comparable with these
        records = report.read_records(plan.records)
        report.check_setting(records, setting, plan.records)
        check_baselines(records, baselines, plan.records)
    except ValueError as err:
        parser.error(str(err))
    return plan, table, names, seeds


def main():
    parser, args = parse_args()

    def log(message):
        print(message, file=sys.stderr, flush=True)  # stdout carries the JSON document and the table

    with tempfile.TemporaryDirectory() as tmp:
        plan, table, names, seeds = make_plan(parser, args, tmp, log)
        malloc = 'steady' if steady_malloc() else 'default'
        set_threads(plan.setting['threads'])
        torch.manual_seed(0)
        env = {k: os.environ.get(k) for k in ('OMP_NUM_THREADS', 'OMP_WAIT_POLICY')}
        t0 = time.perf_counter()
        plan.meta = {'command': ' '.join([*(f'{k}={v}' for k, v in env.items() if v is not None),
                                          shlex.join([os.path.relpath(sys.executable), *sys.argv])]),
                     'cwd': os.getcwd(), 'python': sys.executable, 'environment': env, 'malloc': malloc,
                     'date': datetime.datetime.now().astimezone().isoformat(timespec='seconds'),
                     'loadavg_before': os.getloadavg()}
        networks = prepare(plan, table, names)
        # --quick resumes once: the first seed, then every seed in the same folder (the first seed's runs skipped)
        passes = [run(plan, list(networks), s, networks) for s in ([seeds[:1], seeds] if args.quick else [seeds])]
        plan.meta['wall_seconds'] = time.perf_counter() - t0
        results, rows, lines = render(plan, passes)
        emit('ablation', results, rows, list(rows[0]) if rows else ['variant'])
        print('\n' + '\n'.join([lines[0], *lines[len(rows) + 4:]]))  # the rule and the tables after emit's
        log(f'wrote {os.path.join(plan.out_dir, "ablation.json")} and ablation.md; records in {report.RECORDS}')


if __name__ == '__main__':
    main()
