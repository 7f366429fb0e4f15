"""The ablation's record store and report (benchmarks/bench_ablation.py): one JSON line per finished run, read back
and summarised over seeds into mean, sample standard deviation, the difference to the base variant and a verdict.

A record is one finished (variant, seed) run: ``variant``, ``seed``, ``setting`` (what must be equal for runs to be
compared: seconds, threads, recipe, training and scoring splits, quick), ``experiment``, ``network_g``, ``baseline``
(the option file of a baseline row of ``--baselines``, None for a variant of the recipe), ``iters``,
``train_seconds``, ``wall_seconds``, ``process_cpu_seconds``, ``params``, ``gmacs``, ``latency_ms``, ``device``,
``dataset``, ``images``, ``metrics``, ``labels``, ``mean`` and ``per_label`` (the leaderboard row of its scoring),
``input`` (the degraded input's ``mean`` and ``per_label`` on the same split) and ``finished`` (the date).
"""
import json
import os
import statistics

#: The JSON-lines file of finished runs in ``--out``.
RECORDS = 'ablation_runs.jsonl'
#: The quantities summarised over seeds: the scoring's mean over labels (``harm``: the share of images made more
#: than 0.5 dB worse than their input) and the iterations the time budget reached.
QUANTITIES = ('psnr', 'ssim', 'harm', 'iters')
#: The decision rule, as the report and docs/ablation.md state it.
RULE = ('a variant or baseline is "separated" from the base when |mean PSNR difference| > sd(variant) + sd(base) '
        '(sample standard deviations over each one\'s seeds), else "within the spread"; with fewer than two seeds on '
        'either side nothing is decided')
#: Verdicts of :func:`difference`.
SEPARATED, WITHIN, UNDECIDED = 'separated', 'within the spread', 'fewer than 2 seeds'
#: Cell formats and column titles of the quantities.
FORMATS = {'psnr': '.2f', 'ssim': '.4f', 'harm': '.1%', 'iters': '.0f'}
TITLES = {'psnr': 'PSNR', 'ssim': 'SSIM', 'harm': 'harm rate', 'iters': 'iterations'}


def read_records(path):
    """The finished runs of a records file, in file order ([] when it does not exist).

    Raises:
        ValueError: A line is not a JSON object with ``variant`` and ``seed`` (named by its line number).
    """
    if not os.path.isfile(path):
        return []
    records = []
    with open(path, encoding='utf-8') as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as err:
                raise ValueError(f'{path}:{number}: not a JSON line ({err}); remove the line to run it again') from err
            if not isinstance(record, dict) or not {'variant', 'seed', 'setting'} <= set(record):
                raise ValueError(f'{path}:{number}: not an ablation run record (variant, seed, setting)')
            records.append(record)
    return records


def append_record(path, record):
    """Add ``record`` as the last line of ``path`` atomically: the file is written anew beside it and renamed over
    it, so a killed process leaves either the old file or the new one, never a half-written line."""
    old = ''
    if os.path.isfile(path):
        with open(path, encoding='utf-8') as f:
            old = f.read()
    if old and not old.endswith('\n'):
        old += '\n'
    tmp = f'{path}.tmp'
    with open(tmp, 'w', encoding='utf-8') as f:
        f.write(old + json.dumps(record, default=float) + '\n')
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def check_setting(records, setting, path):
    """Raise ``ValueError`` naming every key of ``setting`` in which a record of ``path`` differs: runs of one
    records file must be comparable."""
    differs = {}
    for record in records:
        for key, value in setting.items():
            if record['setting'].get(key) != value:
                differs.setdefault(key, record['setting'].get(key))
    if differs:
        what = '; '.join(f'{key}: {old!r} there, {setting[key]!r} now' for key, old in differs.items())
        raise ValueError(f'{path} holds runs of another setting ({what}): use another --out, or the same options')


def mean_sd(values):
    """``{'mean', 'sd'}`` of a list: the mean and the sample standard deviation (None below two values)."""
    return {'mean': statistics.fmean(values), 'sd': statistics.stdev(values) if len(values) > 1 else None}


def quantity(record, name):
    """A run's value of one of :data:`QUANTITIES`."""
    return record['iters'] if name == 'iters' else record['mean'][name]


def difference(variant, base):
    """The difference of two :func:`mean_sd` (``variant - base``), its spread (the sum of the two standard
    deviations) and the verdict of :data:`RULE`."""
    diff = variant['mean'] - base['mean']
    if variant['sd'] is None or base['sd'] is None:
        return {'difference': diff, 'spread': None, 'verdict': UNDECIDED}
    spread = variant['sd'] + base['sd']
    return {'difference': diff, 'spread': spread, 'verdict': SEPARATED if abs(diff) > spread else WITHIN}


def summarise(records, order, base):
    """Per variant, over its seeds: :func:`mean_sd` of every quantity, the mean PSNR per label and the PSNR
    :func:`difference` to ``base``.

    Args:
        records (list[dict]): Finished runs (one setting).
        order (list[str]): Variant names in table order; variants of records not in it follow in file order.
        base (str): The variant the others are compared with.

    Returns:
        dict: Variant name -> ``seeds``, ``gmacs`` and ``params`` (of its network), one :func:`mean_sd` per
        quantity of :data:`QUANTITIES`, ``per_label_psnr`` (label -> mean over seeds) and ``vs_base`` (None for the
        base or without its runs).
    """
    names = [n for n in order if any(r['variant'] == n for r in records)]
    names += list(dict.fromkeys(r['variant'] for r in records if r['variant'] not in names))
    out = {}
    for name in names:
        runs = sorted((r for r in records if r['variant'] == name), key=lambda r: r['seed'])
        out[name] = {'seeds': [r['seed'] for r in runs], 'gmacs': runs[0]['gmacs'], 'params': runs[0]['params'],
                     **{q: mean_sd([quantity(r, q) for r in runs]) for q in QUANTITIES},
                     'per_label_psnr': {label: statistics.fmean(r['per_label'][label]['psnr'] for r in runs)
                                        for label in runs[0]['labels']}}
    for name, s in out.items():
        s['vs_base'] = difference(s['psnr'], out[base]['psnr']) if base in out and name != base else None
    return out


def _cell(value, fmt, sign=''):
    return '-' if value is None else format(value, f'{sign}{fmt}')


def _pm(stats, name):
    fmt = FORMATS[name]
    return _cell(stats['mean'], fmt) + ('' if stats['sd'] is None else f' ± {_cell(stats["sd"], fmt)}')


def summary_rows(summary, input_scores, base):
    """One row per variant (and the input first) for :func:`report` and :func:`_common.emit`: seeds, multiply-adds
    (3x256x256), mean ± sd of every quantity, the PSNR difference to ``base`` with its spread, and the verdict."""
    delta = f'ΔPSNR vs {base}'
    rows = [{'variant': 'input (no restoration)', 'seeds': '-', 'GMACs': '-', 'iterations': '-',
             **{f'{TITLES[q]} mean ± sd': _cell(input_scores['mean'].get(q), FORMATS[q]) for q in QUANTITIES[:3]},
             delta: '-', 'spread (sd + sd)': '-', 'verdict': '-'}] if input_scores else []
    for name, s in summary.items():
        vs = s['vs_base'] or {}
        rows.append({'variant': name, 'seeds': ','.join(map(str, s['seeds'])), 'GMACs': _cell(s['gmacs'], '.3f'),
                     'iterations': _pm(s['iters'], 'iters'),
                     **{f'{TITLES[q]} mean ± sd': _pm(s[q], q) for q in QUANTITIES[:3]},
                     delta: _cell(vs.get('difference'), '.2f', '+'), 'spread (sd + sd)': _cell(vs.get('spread'), '.2f'),
                     'verdict': vs.get('verdict', '(base)' if name == base else '-')})
    return rows


def report(records, order, base):
    """Summary and markdown of every record (a partial ablation renders what it has).

    Args:
        records (list[dict]): Finished runs (one setting).
        order (list[str]): Variant names in table order.
        base (str): The base variant.

    Returns:
        tuple[dict, list[dict], list[str]]: :func:`summarise`'s summary, :func:`summary_rows` and the markdown lines
        (the summary table, the mean PSNR per label, every run).
    """
    from interir_plugin.utils.tables import markdown_table

    summary = summarise(records, order, base)
    input_scores = records[-1]['input'] if records else None
    rows = summary_rows(summary, input_scores, base)
    lines = [f'Decision rule: {RULE}.', '']
    if not rows:
        return summary, rows, lines + ['No finished runs yet.']
    lines += markdown_table(list(rows[0]), [list(r.values()) for r in rows])
    labels = list(next(iter(summary.values()))['per_label_psnr'])
    per_label = [[label, _cell(input_scores['per_label'][label]['psnr'], '.2f'),
                  *(_cell(s['per_label_psnr'].get(label), '.2f') for s in summary.values())] for label in labels]
    lines += ['', 'PSNR per label (mean over seeds)', '', *markdown_table(['label', 'input', *summary], per_label)]
    runs = [[r['variant'], r['seed'], r['iters'], _cell(r['train_seconds'], '.1f'),
             *(_cell(r['mean'][q], FORMATS[q]) for q in QUANTITIES[:3])]
            for name in summary for r in sorted((r for r in records if r['variant'] == name), key=lambda r: r['seed'])]
    lines += ['', 'Every run', '', *markdown_table(['variant', 'seed', 'iterations', 'training s',
                                                    *(TITLES[q] for q in QUANTITIES[:3])], runs)]
    return summary, rows, lines
