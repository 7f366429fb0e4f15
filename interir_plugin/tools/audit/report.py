"""The audit's words: the acceptance targets and their table, the headline (what ``interir audit`` and the demo
print) and ``audit.md``."""
from interir_plugin.tools.audit.data import COMPONENTS
from interir_plugin.utils.metrics import HARM_MARGIN_DB
from interir_plugin.utils.tables import markdown_table

#: Acceptance targets for a trained InterIR-S (issues 14 and 23): (audit.json key, comparison, threshold,
#: description).
TARGETS = (
    ('stage_psnr_gain', '>=', 0.5, 'final - first stage PSNR (dB)'),
    ('residual_falls', '>=', 0.8, 'share of images whose residual falls'),
    ('routing_accuracy_over_chance', '>=', 3.0, 'routing accuracy / chance'),
    ('active_set_auc.rain', '>=', 0.75, 'active-set AUC, rain'),
    ('active_set_auc.snow', '>=', 0.75, 'active-set AUC, snow'),
    ('intervention_psnr_drop', '>', 0.0, 'intervention PSNR drop (dB)'),
)


def fmt(value, digits=3):
    """A number for the report (``n/a`` for None)."""
    if value is None:
        return 'n/a'
    return f'{value:.{digits}f}' if isinstance(value, float) else str(value)


def _lookup(result, dotted):
    value = result
    for part in dotted.split('.'):
        value = value.get(part) if isinstance(value, dict) else None
    return value


def target_table(result):
    """``[(description, value or None, comparison, threshold, met or None)]`` for :data:`TARGETS`."""
    rows = []
    for key, op, threshold, text in TARGETS:
        value = _lookup(result, key)
        # '>' asks for more than rounding noise: a drop of 1e-15 dB is no drop
        met = None if value is None else (value >= threshold if op == '>=' else value > threshold + 1e-6)
        rows.append((text, value, op, threshold, met))
    return rows


def _pair(cal):
    """``accuracy/ECE`` of one calibration entry."""
    return f'{fmt(cal["accuracy"], 2)}/{fmt(cal["ece"], 2)}'


def _recogniser_line(result):
    """The headline's recogniser line: accuracy and ECE per part, then each renderer's on its own part."""
    cal = result['presence_calibration']
    line = 'recogniser (p > 0.5) accuracy/ECE ' + ', '.join(f'{c} {_pair(cal[c])}' for c in COMPONENTS)
    own = [f'{name} {_pair(g["presence_calibration"][g["component"]])}'
           for name, g in (result.get('per_renderer') or {}).items()
           if g['component'] is not None and g['presence_calibration'] is not None]
    return line + (f'; per renderer, on its component: {", ".join(own)}' if own else '')


def _harm_line(result):
    groups = result.get('per_renderer') or {}
    if len(groups) < 2:
        return None
    return 'harm rate per renderer: ' + ', '.join(f'{name} {100 * g["harm_rate"]:.0f}% of {g["images"]}'
                                                  for name, g in groups.items())


def headline(result):
    """The audit's headline figures as a few short lines (what ``interir audit`` and the demo print)."""
    sp = result['stage_psnr']
    lines = [f'stage PSNR {sp[0]:.2f} -> {sp[-1]:.2f} dB ({result["stage_psnr_gain"]:+.2f} dB; rises in '
             f'{100 * result["stage_psnr_rises"]:.0f}% of {len(result["per_image"])} images; input '
             f'{result["input_psnr"]:.2f} dB, harm rate {100 * result["harm_rate"]:.1f}%: final more than '
             f'{HARM_MARGIN_DB:g} dB below the input)']
    if result.get('residual_falls') is not None:
        lines.append(f'residual ||PxQ - z|| {result["residual"][0]:.3g} -> {result["residual"][-1]:.3g} '
                     f'(falls in {100 * result["residual_falls"]:.0f}% of images)')
    if result.get('routing_accuracy') is not None:
        lines.append(f'routing accuracy {result["routing_accuracy"]:.2f} (chance {result["routing_chance"]:.2f}, '
                     f'{result["routing_accuracy_over_chance"]:.1f}x; input statistics alone '
                     f'{result["routing_accuracy_input"]:.2f})')
    if result.get('active_set_auc'):
        a, ref = result['active_set_auc'], result['active_set_auc_input']
        lines.append(f'active-set AUC (1 - Delta) rain {fmt(a.get("rain"), 2)}, snow {fmt(a.get("snow"), 2)} '
                     f'(input brightness: rain {fmt(ref.get("rain"), 2)}, snow {fmt(ref.get("snow"), 2)})')
    if result.get('intervention_psnr_drop') is not None:
        lines.append(f'intervention PSNR drop {result["intervention_psnr_drop"]:+.3f} dB')
    if result.get('map_error'):
        lines.append('map error (MAE) ' + ', '.join(f'{k} {fmt(v)}' for k, v in result['map_error'].items()))
    if result.get('presence_accuracy'):
        lines.append('presence recognised ' + ', '.join(f'{k} {fmt(v, 2)}' for k, v in
                                                        result['presence_accuracy'].items())
                     + f' (all four right in {100 * result["presence_exact"]:.0f}% of images)')
    if result.get('presence_calibration'):
        lines.append(_recogniser_line(result))
    lines.append(_harm_line(result))
    return '\n'.join(line for line in lines if line)


def _routing_section(result):
    if result.get('routing_accuracy') is None:
        return []
    lines = ['', '## Routing', '', f'Held-out nearest-centroid accuracy {result["routing_accuracy"]:.3f} over '
             f'{result["routing_dims"]} routing values per image ({result["routing_groups"]} clean images, each held '
             f'out with all its versions); chance {result["routing_chance"]:.3f}; the same on six input statistics '
             f'{result["routing_accuracy_input"]:.3f}.', '']
    return lines + markdown_table(['component', 'AUC (present vs absent)'],
                                  [[c, fmt(v)] for c, v in (result.get('routing_auc') or {}).items()])


def _routing_per_label_section(result):
    table = result.get('routing_per_label')
    if not table:
        return []
    lines = ['', '## Routing per label', '', 'Mean expert mix `alpha` (each row sums to 1) and mean prior gates '
             '`gamma` (each in (0, 1)) over every EConv call of the forward pass, then over the images of each '
             f'label. The labels differ by at most {table["expert_spread"]:.3f} in one expert\'s weight'
             + (f' and {table["gate_spread"]:.3f} in one gate.' if table['gates'] else '.'), '']
    experts = len(table['experts'][0])
    lines += markdown_table(['label', 'images'] + [f'expert {m + 1}' for m in range(experts)],
                            [[label, n] + [f'{v:.3f}' for v in row]
                             for label, n, row in zip(table['labels'], table['images'], table['experts'])])
    if table['gates']:
        lines += [''] + markdown_table(['label'] + table['gate_names'],
                                       [[label] + [f'{v:.3f}' for v in row]
                                        for label, row in zip(table['labels'], table['gates'])])
    return lines


def _active_set_section(result):
    if not result.get('active_set_auc'):
        return []
    lines = ['', '## Active set', '', f'Score `1 - Delta` (Delta: channel and step mean); positives: block mean of '
             f'the true map >= {result["active_set_threshold"]}.', '']
    lines += markdown_table(
        ['map', 'AUC of 1 - Delta', 'images', 'per stage', 'input brightness AUC'],
        [[key, fmt(value), result['active_set_images'][key],
          ', '.join(fmt(v, 2) for v in result['active_set_auc_per_stage'].get(key) or []),
          fmt(result['active_set_auc_input'][key])] for key, value in result['active_set_auc'].items()])
    corr = result['active_set_correlation']
    return lines + ['', f'Correlation of Delta with transmission {fmt(corr.get("transmission"))}, with illumination '
                    f'{fmt(corr.get("illumination"))}.']


def _intervention_and_maps_section(result):
    lines = []
    if result.get('intervention_psnr_drop') is not None:
        change = result['intervention_psnr_change']
        lines += ['', '## Intervention', '', f'Own-label centroid routing changes the final PSNR by '
                  f'{change["own"]:+.3f} dB, other labels\' by {change["other"]:+.3f} dB: drop '
                  f'{result["intervention_psnr_drop"]:+.3f} dB ({result["intervention_images"]} images).']
    if result.get('map_error'):
        per_stage = result['map_error_per_stage']
        lines += ['', '## Physical maps (mean absolute error)', '']
        lines += markdown_table(['map', 'final', 'per stage'],
                                [[key, fmt(value, 4), ', '.join(fmt(v, 4) for v in per_stage[key])]
                                 for key, value in result['map_error'].items()])
    return lines


def _cells(cal):
    """``accuracy / ECE`` cells of the four parts (``n/a`` where not measured)."""
    return [_pair(cal[c]) if cal else 'n/a' for c in COMPONENTS]


def _renderer_section(result):
    groups = result.get('per_renderer') or {}
    if not groups:
        return []
    lines = ['', '## Per renderer', '', 'A sample counts for the renderer of each component it carries; a stored pair '
             'for its data. Harm: final more than 0.5 dB below the input. Recogniser: accuracy at p > 0.5 / expected '
             'calibration error (10 equal-width bins of p), per part.', '']
    if result.get('presence_calibration'):
        lines += markdown_table(['group', 'images'] + list(COMPONENTS),
                                [['all', len(result['per_image'])] + _cells(result['presence_calibration'])]) + ['']
    return lines + markdown_table(
        ['renderer', 'component', 'images', 'input PSNR', 'final PSNR', 'harm rate'] + list(COMPONENTS),
        [[name, g['component'] or '(stored pairs)', g['images'], fmt(g['input_psnr'], 2), fmt(g['final_psnr'], 2),
          f'{100 * g["harm_rate"]:.1f}%'] + _cells(g['presence_calibration']) for name, g in groups.items()])


def _header(result):
    """``audit.md``'s title, data line, headline targets, per-stage and per-label tables."""
    lines = [f'# Audit of {result["network"]} ({result["option_file"]})', '',
             f'Data: `{result["data"]}` ({result["data_kind"]}, {len(result["per_image"])} images, labels: '
             f'{", ".join(result["labels"])}); seed {result["seed"]}; weights: `{result["weights"]}`.', '',
             '## Headline', '']
    lines += markdown_table(['figure', 'value', 'target', 'met'],
                            [[text, fmt(value), f'{op} {threshold}', 'n/a' if met is None else 'yes' if met else 'no']
                             for text, value, op, threshold, met in target_table(result)])
    residual = result.get('residual') or [None] * len(result['stage_psnr'])
    names = [str(k + 1) for k in range(len(result['stage_psnr']) - 1)] + ['final']
    lines += ['', '## Per stage', '']
    lines += markdown_table(['stage', 'PSNR (dB)', 'residual'],
                            [['input', f'{result["input_psnr"]:.2f}', '']] +
                            [[n, f'{p:.2f}', fmt(r, 4)] for n, p, r in zip(names, result['stage_psnr'], residual)])
    lines += ['', '## Per label (stage PSNR, first -> final)', '']
    return lines + markdown_table(['label', 'first', 'final'], [[label, f'{v[0]:.2f}', f'{v[-1]:.2f}']
                                                                for label, v in result['stage_psnr_per_label'].items()])


def write_markdown(path, result):
    """``audit.md``: setup, targets, per-stage and per-label tables, then the sections that apply."""
    lines = _header(result) + _routing_section(result) + _routing_per_label_section(result)
    lines += _active_set_section(result) + _intervention_and_maps_section(result) + _renderer_section(result)
    if result['notes']:
        lines += ['', '## Not measured', ''] + [f'- {n}' for n in result['notes']]
    with open(path, 'w', encoding='utf-8') as f:
        f.write('\n'.join(lines) + '\n')
