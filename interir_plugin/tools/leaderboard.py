"""Leaderboard tables and chart: per-label metrics of several models (and the degraded input) side by side.

A row is a dict with ``model`` (display name), ``network`` (``network_g`` type, ``'-'`` for the input),
``dataset``, ``images``, ``params``, ``gmacs``, ``latency_ms``, ``device`` (None where not applicable, e.g. for
the identity baseline), ``metrics`` (the ordered metric names), ``labels`` (ordered label names),
``per_label`` (``{label: {metric: value}}``) and ``mean`` (``{metric: mean over labels}``, the headline number
of multi-degradation protocols; for unlabelled data the mean over images).

Written files: ``leaderboard.csv`` (one row per model and dataset; columns :func:`csv_columns`),
``leaderboard.md`` (a summary table and one per-label table per metric, for each dataset) and
``leaderboard.png`` (per dataset: grouped bars of the first metric per label, and mean vs. multiply-adds).
"""
import csv
import os

from interir_plugin.utils.metrics import HARM, HARM_MARGIN_DB
from interir_plugin.utils.tables import markdown_table

#: Fixed leading columns of ``leaderboard.csv``; per-metric columns follow (see :func:`csv_columns`).
BASE_COLUMNS = ('model', 'network', 'dataset', 'images', 'params', 'gmacs', 'latency_ms', 'device', 'iters',
                'train_seconds')
#: Display name of the degraded-input baseline.
IDENTITY_NAME = 'input (no restoration)'


def read_metrics_csv(path):
    """Read a per-label metrics CSV written by :class:`UnfoldingRestorationModel` validation.

    Args:
        path (str): ``<path.log>/metrics/<dataset>_<iter>.csv`` (columns ``dataset, iter, label, images, <metrics>``;
            label rows, then ``mean_over_labels`` for labelled data, then ``overall``).

    Returns:
        dict: ``dataset``, ``metrics`` (names), ``labels`` (ordered), ``per_label`` ``{label: {metric: float}}``,
        ``mean`` (mean over labels, or over images for unlabelled data) and ``images`` (total).
    """
    with open(path, newline='', encoding='utf-8') as f:
        rows = list(csv.DictReader(f))
    if not rows or rows[-1].get('label') != 'overall':
        raise ValueError(f'{path}: not a per-label metrics CSV (no final "overall" row)')
    metrics = [c for c in rows[0] if c not in ('dataset', 'iter', 'label', 'images')]
    by_label = {r['label']: {m: float(r[m]) for m in metrics} for r in rows}
    labels = [r['label'] for r in rows if r['label'] not in ('mean_over_labels', 'overall')]
    return {'dataset': rows[0]['dataset'], 'metrics': metrics, 'labels': labels,
            'per_label': {label: by_label[label] for label in labels},
            'mean': by_label.get('mean_over_labels', by_label['overall']), 'images': int(rows[-1]['images'])}


def _datasets(rows):
    return list(dict.fromkeys(r['dataset'] for r in rows))


def _union(rows, key):
    return list(dict.fromkeys(x for r in rows for x in r[key]))


def csv_columns(rows):
    """Columns of ``leaderboard.csv``: :data:`BASE_COLUMNS`, then ``<metric>_mean`` and ``<metric>_<label>``."""
    metrics, labels = _union(rows, 'metrics'), _union(rows, 'labels')
    return list(BASE_COLUMNS) + [f'{m}_mean' for m in metrics] + [f'{m}_{lb}' for m in metrics for lb in labels]


def ranked(rows):
    """Rows grouped by dataset (first appearance) and sorted by the first metric's mean, best first."""
    out = []
    for ds in _datasets(rows):
        group = [r for r in rows if r['dataset'] == ds]
        first = group[0]['metrics'][0]
        out += sorted(group, key=lambda r: -r['mean'].get(first, float('-inf')))
    return out


def write_csv(rows, path):
    """Write ``leaderboard.csv`` (empty cells where a value does not apply)."""
    columns = csv_columns(rows)
    with open(path, 'w', newline='', encoding='utf-8') as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        for r in ranked(rows):
            line = {c: r.get(c) for c in BASE_COLUMNS}
            line.update({f'{m}_mean': r['mean'][m] for m in r['metrics']})
            line.update({f'{m}_{lb}': v[m] for lb, v in r['per_label'].items() for m in r['metrics']})
            writer.writerow({k: ('' if v is None else (f'{v:.6g}' if isinstance(v, float) else v))
                             for k, v in line.items()})


def _metric_title(metric, mean_name):
    if metric == HARM:
        return f'harm rate (output > {HARM_MARGIN_DB:g} dB below input)'
    return f'{metric.upper()} ({mean_name})'


def _cell(value, fmt):
    return '-' if value is None else format(value, fmt)


def _metric_fmt(metric):
    if metric == HARM:
        return '.1%'
    return '.4f' if 'ssim' in metric.lower() else '.2f'


def markdown(rows):
    """The leaderboard as markdown: per dataset, a summary table, then one per-label table per metric."""
    lines = []
    for ds in _datasets(rows):
        group = [r for r in ranked(rows) if r['dataset'] == ds]
        metrics, labels = _union(group, 'metrics'), _union(group, 'labels')
        mean_name = 'mean over labels' if labels else 'mean'
        lines += [f'### {ds} ({group[0]["images"]} images{f", {len(labels)} labels" if labels else ""})', '']
        trained = any(r.get('iters') is not None for r in group)
        lines += markdown_table(
            ['model', 'network', 'params (M)', 'MACs (G)', 'latency (ms)',
             *(('iterations', 'training (s)') if trained else ()), *(_metric_title(m, mean_name) for m in metrics)],
            [[r['model'], r['network'], _cell(None if r.get('params') is None else r['params'] / 1e6, '.3f'),
              _cell(r.get('gmacs'), '.2f'), _cell(r.get('latency_ms'), '.1f'),
              *((_cell(r.get('iters'), 'd'), _cell(r.get('train_seconds'), '.1f')) if trained else ()),
              *(_cell(r['mean'].get(m), _metric_fmt(m)) for m in metrics)] for r in group])
        devices = sorted({r['device'] for r in group if r.get('device')})
        lines += ['', f'MACs: multiply-adds of one forward pass at 3x256x256 (mmengine); latency: median forward time '
                      f'at 1x3x256x256 on {", ".join(devices) or "-"}.', '']
        for m in metrics if labels else ():
            lines += [f'{"harm rate" if m == HARM else m.upper()} per label:', '']
            lines += markdown_table(['model', *labels], [
                [r['model'], *(_cell(r['per_label'].get(lb, {}).get(m), _metric_fmt(m)) for lb in labels)]
                for r in group])
            lines.append('')
    return '\n'.join(lines)


def means_table(rows):
    """Every model's means on every dataset, side by side: one column per dataset whose cells read ``PSNR / SSIM /
    harm`` (its metrics in order; '-' where a model has no row for the dataset). Models in the first dataset's
    ranking order, then any that only other datasets have.

    Args:
        rows (list[dict]): Leaderboard rows (module docstring).

    Returns:
        list[str]: Markdown table lines.
    """
    datasets = _datasets(rows)
    metrics = {ds: _union([r for r in rows if r['dataset'] == ds], 'metrics') for ds in datasets}
    models = list(dict.fromkeys(r['model'] for r in ranked(rows)))
    by_key = {(r['model'], r['dataset']): r for r in rows}
    header = ['model', *(f'{ds} ({" / ".join("harm rate" if m == HARM else m.upper() for m in metrics[ds])})'
                         for ds in datasets)]

    def cell(model, ds):
        if (model, ds) not in by_key:
            return '-'
        return ' / '.join(_cell(by_key[(model, ds)]['mean'].get(m), _metric_fmt(m)) for m in metrics[ds])

    return markdown_table(header, [[model, *(cell(model, ds) for ds in datasets)] for model in models])


def plot(rows, path):
    """Write ``leaderboard.png``: per dataset, the first metric per label (grouped bars) and mean vs. MACs."""
    import matplotlib

    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    datasets = _datasets(rows)
    fig, axes = plt.subplots(len(datasets), 2, figsize=(15, 4.8 * len(datasets)), squeeze=False,
                             gridspec_kw={'width_ratios': [2.6, 1]})
    for (ax_bar, ax_cost), ds in zip(axes, datasets):
        group = [r for r in ranked(rows) if r['dataset'] == ds]
        metric = group[0]['metrics'][0]
        labels = _union(group, 'labels') or ['all']
        width = 0.8 / len(group)
        models = [r['model'] for r in group if r.get('gmacs') is not None]
        colour = {m: f'C{i % 10}' for i, m in enumerate(models)}  # one colour per model in both panels
        for i, r in enumerate(group):
            values = [r['per_label'].get(lb, r['mean'] if lb == 'all' else {}).get(metric, float('nan'))
                      for lb in labels]
            ax_bar.bar([k + (i - (len(group) - 1) / 2) * width for k in range(len(labels))], values, width,
                       label=f'{r["model"]} ({r["mean"][metric]:.2f})', color=colour.get(r['model'], '0.6'))
        ax_bar.set_xticks(range(len(labels)))
        ax_bar.set_xticklabels(labels, rotation=30, ha='right')
        finite = [r['per_label'].get(lb, r['mean']).get(metric) for r in group for lb in labels]
        finite = [v for v in finite if v is not None]
        if finite:
            ax_bar.set_ylim(min(finite) - 1, max(finite) + 1)
        ax_bar.set_ylabel(metric.upper())
        ax_bar.set_title(f'{ds}: {metric.upper()} per label (legend: mean over labels)')
        ax_bar.legend(fontsize=8)
        ax_bar.grid(axis='y', alpha=0.3)
        for r in group:
            if r['model'] in colour:
                ax_cost.scatter(r['gmacs'], r['mean'][metric], s=40, color=colour[r['model']])
                ax_cost.annotate(r['model'], (r['gmacs'], r['mean'][metric]), fontsize=8,
                                 textcoords='offset points', xytext=(4, 4))
            else:
                ax_cost.axhline(r['mean'][metric], ls='--', color='0.6', lw=1)
                ax_cost.annotate(r['model'], (0.02, r['mean'][metric]), xycoords=('axes fraction', 'data'),
                                 fontsize=8, color='grey', textcoords='offset points', xytext=(0, 3))
        if models:
            ax_cost.set_xscale('log')
            ax_cost.margins(x=0.3)  # room for the names of the outermost points
        ax_cost.set_xlabel('multiply-adds at 3x256x256 (G)')
        ax_cost.set_ylabel(f'mean {metric.upper()}')
        ax_cost.set_title('quality vs. cost')
        ax_cost.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_leaderboard(rows, out_dir):
    """Write ``leaderboard.{csv,md,png}`` into ``out_dir`` (created).

    Args:
        rows (list[dict]): Leaderboard rows (module docstring).
        out_dir (str): Output folder.

    Returns:
        dict: ``csv``, ``md``, ``png`` paths and ``markdown`` (the text written to ``md``).
    """
    if not rows:
        raise ValueError('leaderboard: no rows to write')
    os.makedirs(out_dir, exist_ok=True)
    paths = {k: os.path.join(out_dir, f'leaderboard.{k}') for k in ('csv', 'md', 'png')}
    write_csv(rows, paths['csv'])
    text = markdown(rows)
    with open(paths['md'], 'w', encoding='utf-8') as f:
        f.write(text + '\n')
    plot(rows, paths['png'])
    return {**paths, 'markdown': text}
