"""``audit.png``: stage PSNR, residual, routing confusion, AUCs, intervention, the headline; routing per label
(labels x experts, labels x prior gates) and the recogniser per renderer; one rain and one snow example of the
active set."""
import textwrap

import numpy as np

from interir_plugin.tools.audit.data import COMPONENTS
from interir_plugin.tools.audit.measurements import ACTIVE_SET_THRESHOLD
from interir_plugin.tools.audit.report import fmt, headline
from interir_plugin.tools.plotting import heat_map, note, stage_ticks


def _plot_stages(ax, result):
    ticks = stage_ticks(ax, result['stages'])
    for label, values in result['stage_psnr_per_label'].items():
        ax.plot(ticks, values, '-', lw=0.8, alpha=0.5, label=label)
    ax.plot(ticks, result['stage_psnr'], 'ko-', lw=2, label='mean')
    ax.axhline(result['input_psnr'], color='grey', ls='--', lw=1, label='input')
    ax.set_ylabel('PSNR (dB)')
    ax.set_title(f'stage PSNR (rises in {100 * result["stage_psnr_rises"]:.0f}%)')
    ax.legend(fontsize=6, ncol=2)


def _plot_residual(ax, result):
    if not result.get('residual'):
        return note(ax, 'no data-fidelity residual\n(the network returns no aux)')
    ticks = stage_ticks(ax, len(result['residual']))
    for r in result['per_image']:
        ax.plot(ticks, r['residual'], '-', color='C0', lw=0.5, alpha=0.3)
    ax.plot(ticks, result['residual'], 'ko-', lw=2)
    ax.set_ylabel('||P x Q - z|| (feature units)')
    ax.set_title(f'data-fidelity residual (falls in {100 * result["residual_falls"]:.0f}%)')


def _plot_confusion(ax, result):
    conf = result.get('routing_confusion')
    if not conf:
        return note(ax, 'no routing\n(no EConv, or one label)')
    counts = np.asarray(conf['counts'], float)
    heat_map(ax, counts / np.maximum(counts.sum(1, keepdims=True), 1), conf['labels'], conf['labels'],
            f'routing: accuracy {result["routing_accuracy"]:.2f} (chance {result["routing_chance"]:.2f})',
            xlabel='nearest routing centroid (share of the row)')


def _plot_aucs(ax, result):
    bars = {f'route {k}': v for k, v in (result.get('routing_auc') or {}).items() if v is not None}
    bars.update({f'1-Delta {k}': v for k, v in (result.get('active_set_auc') or {}).items() if v is not None})
    if not bars:
        return note(ax, 'no AUCs\n(no routing, no Delta or no maps)')
    ax.bar(range(len(bars)), list(bars.values()), color=['C2' if k.startswith('1-Delta') else 'C0' for k in bars])
    ax.axhline(0.5, color='grey', ls='--', lw=1)
    ax.set_xticks(range(len(bars)), list(bars), rotation=45, ha='right', fontsize=7)
    ax.set_ylim(0, 1)
    ax.set_ylabel('AUC (0.5: no better than chance)', fontsize=7)
    corr = result.get('active_set_correlation') or {}
    ax.set_title(f'AUCs; corr(Delta, t) {fmt(corr.get("transmission"), 2)}, '
                 f'corr(Delta, L) {fmt(corr.get("illumination"), 2)}', fontsize=9)


def _plot_intervention(ax, result):
    drops = [r['intervention']['own'] - r['intervention']['others'] for r in result['per_image']
             if 'intervention' in r]
    if not drops:
        return note(ax, 'no intervention\n(no EConv, or one label)')
    spread = max(drops) - min(drops)
    ax.hist(drops, bins=min(20, max(5, len(drops) // 3)), color='C1',
            range=None if spread > 1e-6 else (min(drops) - 0.05, max(drops) + 0.05))  # all equal: a visible bar
    ax.axvline(0, color='grey', ls='--', lw=1)
    ax.set_xlabel('PSNR(own centroid) - PSNR(other centroids), dB')
    ax.set_ylabel('images')
    ax.set_title(f'intervention: mean drop {result["intervention_psnr_drop"]:+.3f} dB')


def _plot_routing_per_label(ax_experts, ax_gates, result):
    table = result.get('routing_per_label')
    if not table:
        note(ax_experts, 'no routing per label\n(no EConv)')
        return note(ax_gates, '')
    experts = [f'expert {m + 1}' for m in range(len(table['experts'][0]))]
    heat_map(ax_experts, table['experts'], table['labels'], experts,
            f'expert mix alpha per label (rows sum to 1; spread {table["expert_spread"]:.3f})')
    if not table['gates']:
        return note(ax_gates, 'no prior gates\n(prior_gates=False)')
    heat_map(ax_gates, table['gates'], table['labels'], table['gate_names'],
            f'prior gates gamma per label (0 off, 1 on; spread {table["gate_spread"]:.3f})')


def _plot_recogniser(ax, result):
    groups = {name: g for name, g in (result.get('per_renderer') or {}).items() if g['presence_calibration']}
    if not result.get('presence_calibration') or not groups:
        return note(ax, 'no recogniser calibration\n(no recogniser, or unknown degradations)')
    rows = ['all'] + [f'{name} ({g["component"] or "data"})' for name, g in groups.items()]
    cals = [result['presence_calibration']] + [g['presence_calibration'] for g in groups.values()]
    acc = [[c[part]['accuracy'] for part in COMPONENTS] for c in cals]
    heat_map(ax, acc, rows, list(COMPONENTS), 'recogniser accuracy (p > 0.5) per renderer; ECE in the .md',
            xlabel='presence part')


def _plot_examples(fig, grid, examples):
    for row, (key, ex) in enumerate(examples.items(), start=3):
        panels = ((ex['input'], f'{ex["name"]}: input', None),
                  (ex['truth'], f'true {key} (block mean; positive >= {ACTIVE_SET_THRESHOLD[key]})', 'magma'),
                  (ex['score'], f'1 - Delta, step mean (AUC {fmt(ex["auc"], 2)})', 'viridis'))
        for col, (img, title, cmap) in enumerate(panels):
            ax = fig.add_subplot(grid[row, col])
            im = ax.imshow(np.clip(img, 0, 1) if cmap is None else img, cmap=cmap)
            ax.set_title(title, fontsize=8)
            ax.axis('off')
            if cmap is not None:
                fig.colorbar(im, ax=ax, fraction=0.046, pad=0.02)


def _wrapped(text, width=90):
    """``text`` with every line wrapped at ``width`` characters (the headline's renderer lines are long)."""
    return '\n'.join(textwrap.fill(line, width) for line in text.split('\n'))


def draw_audit_figure(path, result):
    """Draw ``audit.png`` (the panels of the module docstring) from an audit result with its ``_examples``."""
    import matplotlib

    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    examples = result.get('_examples') or {}
    fig = plt.figure(figsize=(15, 13.5 + 3 * len(examples)))
    grid = fig.add_gridspec(3 + len(examples), 3, height_ratios=[1, 1, 1.1] + [0.8] * len(examples), hspace=0.6,
                            wspace=0.35, top=0.95)
    _plot_stages(fig.add_subplot(grid[0, 0]), result)
    _plot_residual(fig.add_subplot(grid[0, 1]), result)
    _plot_confusion(fig.add_subplot(grid[0, 2]), result)
    _plot_aucs(fig.add_subplot(grid[1, 0]), result)
    _plot_intervention(fig.add_subplot(grid[1, 1]), result)
    note(fig.add_subplot(grid[1, 2]), _wrapped(headline(result)), fontsize=7)
    _plot_routing_per_label(fig.add_subplot(grid[2, 0]), fig.add_subplot(grid[2, 1]), result)
    _plot_recogniser(fig.add_subplot(grid[2, 2]), result)
    _plot_examples(fig, grid, examples)
    fig.suptitle(f'interir audit: {result["network"]} on {result["data"]}', y=0.995)
    fig.savefig(path, dpi=80, bbox_inches='tight')
    plt.close(fig)
