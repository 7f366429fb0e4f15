"""The ``interir explain`` figure: what the network did to one image, each panel titled with what it is and its units.

Rows, top to bottom (a row without content is left out):

1. the input and every stage's output, with its PSNR when the clean image is known;
2. the physical maps of the final step, the true ones (synthesiser's or given) above the network's in the same
   column and on the same colour scale: gain ``G``, transmission ``t``, additive layer ``R``, streak layer (rain and
   snow; the truth: the renderer's rain / snow map);
3. the active set ``1 - Delta`` (channel mean; large where the prior's prox clamps) of every step beside the true
   rain / snow map averaged over the same feature-grid blocks, with the AUC of ``1 - Delta`` as its detector;
4. plots: the data-fidelity residual and step size per step, the recogniser's probabilities, the airlight per
   channel, and this image's expert mix and prior gates per step.

**No panel shows a constant**: a map (or a plot's values) whose values span at most :data:`CONSTANT_TOL` is not
drawn; a short note stands in its place and ``explain.json``'s ``skipped_panels`` names it with its value.
"""
import numpy as np

from interir_plugin.tools.plotting import heat_map, note, stage_ticks
from interir_plugin.utils.presence import PRESENCE_PARTS

#: A panel whose values span at most this (max - min) shows a constant and is not drawn.
CONSTANT_TOL = 1e-3
#: The physical-map columns: (key, title with units, colour map). ``streak``'s truth is the rain / snow map.
MAP_COLUMNS = (
    ('gain', 'gain G (factor)\n1 = unchanged, < 1 darker', 'viridis'),
    ('transmission', 'transmission t (share of\nscene light; 1 = no haze)', 'viridis'),
    ('layer', 'additive layer R (intensity,\nchannel mean; > 0 adds light)', 'RdBu_r'),
    ('streak', 'streak layer: rain / snow\n(intensity; truth: renderer\'s map)', 'magma'),
)


def is_constant(values, tol=CONSTANT_TOL):
    """Whether ``values`` (any shape) span at most ``tol`` (an empty array counts as constant)."""
    a = np.asarray(values, np.float64)
    return a.size == 0 or float(np.ptp(a)) <= tol


def _plane(value):
    """A map as ``H x W`` (channel mean of ``H x W x C``); None for a number or a per-channel value."""
    a = np.asarray(value, np.float32)
    if a.ndim == 3 and a.shape[0] > 1 and a.shape[1] > 1:
        return a.mean(-1)
    return a if a.ndim == 2 and min(a.shape) > 1 else None


def _true_plane(true_maps, key):
    if key != 'streak':
        return _plane(true_maps[key]) if key in true_maps else None
    parts = [_plane(true_maps[k]) for k in ('rain', 'snow') if k in true_maps]
    parts = [p for p in parts if p is not None]
    return np.sum(parts, 0) if parts else None


def _limits(key, planes):
    """One colour scale for the truth and the network: symmetric for ``layer``, from 0 for the others."""
    top = max(float(np.abs(p).max()) for p in planes)
    if key == 'layer':
        return -(top or 1.0), top or 1.0
    return 0.0, max(top, 1.0) if key in ('gain', 'transmission') else (top or 1.0)


def map_columns(true_maps, estimated, skipped):
    """The physical-map columns to draw: ``[(key, title, cmap, (vmin, vmax), truth plane, network plane)]``.

    A plane that is constant is replaced by a note (``('constant', value)``: a uniform true transmission of 0.35
    against the network's 1 says the network did not dehaze) and listed in ``skipped``; a column with neither the
    truth nor an estimate is left out; the colour scale is None when both sides are notes.
    """
    columns = []
    for key, title, cmap in MAP_COLUMNS:
        planes = {'truth': _true_plane(true_maps or {}, key),
                  'network': _plane(estimated[key]) if key in (estimated or {}) else None}
        for side, plane in planes.items():
            if plane is not None and is_constant(plane):
                skipped.append({'panel': f'{key} ({side})', 'value': float(plane.mean())})
                planes[side] = ('constant', float(plane.mean()))
        if planes['truth'] is None and planes['network'] is None:
            continue
        drawn = [p for p in planes.values() if isinstance(p, np.ndarray)]  # a constant stays as a note: t = 0.35
        columns.append((key, title, cmap, _limits(key, drawn) if drawn else None, planes['truth'], planes['network']))
    return columns


def active_set_panels(one_minus_delta, truth, skipped):
    """The active-set row: ``[(title, plane or ('constant', value), cmap)]``, the truth first when known."""
    panels = []
    if truth is not None:
        panels.append(('true rain / snow\n(block mean on the grid)', truth, 'magma'))
    for name, plane, score in one_minus_delta:
        title = f'1 - Delta, {name}' + (f'\n(AUC {score:.2f} for the truth)' if score is not None else '')
        if is_constant(plane):
            skipped.append({'panel': f'1 - Delta, {name}', 'value': float(np.mean(plane))})
            plane = ('constant', float(np.mean(plane)))
        panels.append((title, plane, 'viridis'))
    return panels


# ------------------------------------------------------------------------------------------------------ drawing
def _image(fig, ax, plane, title, cmap, limits=None):
    """One map panel (or the note of a constant one) with its colour bar."""
    if isinstance(plane, tuple):
        return note(ax, f'{title}\n\nconstant {plane[1]:.3f}\n(panel not drawn)')
    vmin, vmax = limits or (float(np.min(plane)), max(float(np.max(plane)), float(np.min(plane)) + 1e-6))
    im = ax.imshow(plane, cmap=cmap, vmin=vmin, vmax=vmax)
    ax.set_title(title, fontsize=7)
    ax.axis('off')
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.02)


def _draw_image_row(fig, cell, images, ncols):
    row = cell.subgridspec(1, ncols)
    for i, (img, name) in enumerate(images):
        ax = fig.add_subplot(row[0, i])
        ax.imshow(img)
        ax.set_title(name, fontsize=9)
        ax.axis('off')


def _draw_map_row(fig, cell, label, side, columns, ncols):
    row = cell.subgridspec(1, ncols)
    note(fig.add_subplot(row[0, 0]), label)
    for col, (_, title, cmap, limits, truth, network) in enumerate(columns, start=1):
        plane = truth if side == 'truth' else network
        if plane is None:
            continue
        _image(fig, fig.add_subplot(row[0, col]), plane, title, cmap, limits)


def _draw_active_row(fig, cell, panels, ncols):
    row = cell.subgridspec(1, ncols)
    note(fig.add_subplot(row[0, 0]), 'active set 1 - Delta\n(channel mean; 1: the prior\'s\nprox clamps, 0: passes)\n'
                                      'on the feature grid')
    for col, (title, plane, cmap) in enumerate(panels, start=1):
        _image(fig, fig.add_subplot(row[0, col]), plane, title, cmap)


def _draw_residual(ax, numbers):
    ticks = stage_ticks(ax, len(numbers['residual']), 'step')
    lines = ax.plot(ticks, numbers['residual'], 'o-', color='C0', label='||P x Q - z||')
    ax.set_ylabel('residual (feature units)', fontsize=7)
    ax.set_title('data-fidelity residual\nand step size eta', fontsize=9)
    ax2 = ax.twinx()
    lines += ax2.plot(ticks, numbers['eta'], 's--', color='C3', ms=4, label='eta (right axis)')
    ax2.ticklabel_format(axis='y', style='sci', scilimits=(-2, 2), useOffset=False)
    ax.legend(lines, [ln.get_label() for ln in lines], fontsize=6, loc='best')


def _draw_presence(ax, presence):
    probs = [presence['probability'][p] for p in PRESENCE_PARTS]
    gates = presence.get('gates') or {}
    colours = ['C2' if gates.get(p) else 'C7' for p in PRESENCE_PARTS]
    ax.bar(range(len(probs)), probs, color=colours)
    truth = presence.get('truth')
    if truth is not None:
        ax.plot(range(len(probs)), [float(truth[p]) for p in PRESENCE_PARTS], 'kx', ms=8, label='truth (1 present)')
        ax.legend(fontsize=6, loc='upper right')
    ax.axhline(0.5, color='grey', ls='--', lw=1)
    ax.set_xticks(range(len(probs)), PRESENCE_PARTS)
    ax.set_ylim(-0.05, 1.05)
    ax.set_ylabel('P(present)', fontsize=7)
    ax.set_title('recogniser: probability per part\n(green: the head\'s gate is on)', fontsize=9)


def _draw_airlight(ax, airlight):
    est, truth = airlight['network'], airlight.get('truth')
    channels = np.arange(len(est))
    width = 0.4 if truth is not None else 0.8
    ax.bar(channels - (width / 2 if truth is not None else 0), est, width, label='network', color='C0')
    if truth is not None:
        ax.bar(channels + width / 2, np.broadcast_to(truth, est.shape), width, label='truth', color='C1')
    ax.set_xticks(channels, ['R', 'G', 'B'][:len(est)] if len(est) <= 3 else [str(c) for c in channels])
    ax.set_ylim(0, 1.05)
    ax.set_ylabel('intensity', fontsize=7)
    ax.set_title('airlight A per channel\n(acts where t < 1)', fontsize=9)
    ax.legend(fontsize=6)


def _draw_routing(ax, matrix, columns, title):
    rows = len(matrix)
    heat_map(ax, matrix, [f'step {k + 1}' for k in range(rows - 1)] + ['final'], columns, title)


def _routing_plot(names, title):
    return lambda ax, matrix: _draw_routing(ax, matrix, names, title)


def plot_panels(numbers, presence, airlight, skipped):
    """The plots of the last row that show more than a constant: ``[(draw function, argument)]``.

    Each candidate is ``(name, the value arrays it shows, draw, argument)``; it is skipped (and listed in
    ``skipped``) when every one of its arrays is constant.
    """
    candidates = []
    if numbers is not None:
        candidates.append(('residual', (numbers['residual'], numbers['eta']), _draw_residual, numbers))
    if presence is not None:
        candidates.append(('recogniser probabilities', (list(presence['probability'].values()),), _draw_presence,
                           presence))
    if airlight is not None:
        shown = (np.concatenate([np.ravel(airlight['network']), np.ravel(airlight.get('truth', []))]),)
        candidates.append(('airlight', shown, _draw_airlight, airlight))
    if numbers is not None:
        experts = [f'expert {m + 1}' for m in range(len(numbers['alpha_mean'][0]))]
        candidates.append(('expert mix alpha', (numbers['alpha_mean'],), _routing_plot(
            experts, 'this image\'s expert mix alpha\n(mean over the step\'s EConvs;\nrows sum to 1)'),
            numbers['alpha_mean']))
        candidates.append(('prior gates gamma', (numbers['gamma_mean'],), _routing_plot(
            numbers['prior_names'], 'this image\'s prior gates gamma\n(0 off, 1 on)'), numbers['gamma_mean']))
    panels = []
    for name, shown, draw, arg in candidates:
        if all(is_constant(v) for v in shown):
            skipped.append({'panel': name, 'value': float(np.mean(shown[0])) if np.size(shown[0]) else None})
        else:
            panels.append((draw, arg))
    return panels


def _heights(images, rows, width, ncols):
    """Row heights (inches) for the image rows and the plot row."""
    aspect = images[0][0].shape[0] / images[0][0].shape[1]
    panel = width / ncols * 0.8  # drawn width of one image panel (inches), after the gaps between panels
    return [panel * aspect + 0.5] + [panel * aspect + 0.6] * rows


def draw_figure(path, title, images, columns=(), active=(), plots=(), footer=None):
    """Draw the explain figure (module docstring) and save it as PNG.

    Args:
        path (str): PNG file.
        title (str): Figure title.
        images (list[tuple[ndarray, str]]): ``(H x W x 3 image, panel title)``: the input, then every stage.
        columns (list): :func:`map_columns`. Default: ().
        active (list): :func:`active_set_panels`. Default: ().
        plots (list): :func:`plot_panels`. Default: ().
        footer (str | None): A line under the figure (where to find what it cannot show). Default: None.
    """
    import matplotlib

    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    sides = [s for s in ('truth', 'network') if any(c[4 if s == 'truth' else 5] is not None for c in columns)]
    ncols = max(len(images), len(columns) + 1, len(active) + 1)
    width = max(2.4 * ncols, 13)
    heights = _heights(images, len(sides) + bool(active), width, ncols) + ([3.4] if plots else [])
    fig = plt.figure(figsize=(width, sum(heights) * 1.2))
    grid = fig.add_gridspec(len(heights), 1, height_ratios=heights, hspace=0.35, top=0.95, bottom=0.04)
    _draw_image_row(fig, grid[0], images, ncols)
    labels = {'truth': 'true maps\n(what made the input)', 'network': 'network\'s estimates\n(final step)'}
    for r, side in enumerate(sides, start=1):
        _draw_map_row(fig, grid[r], labels[side], side, columns, ncols)
    if active:
        _draw_active_row(fig, grid[1 + len(sides)], active, ncols)
    if plots:
        row = grid[-1].subgridspec(1, len(plots), wspace=0.55)
        for k, (draw, arg) in enumerate(plots):
            draw(fig.add_subplot(row[0, k]), arg)
    fig.suptitle(title, y=1.0, va='bottom')  # above the panels; bbox_inches='tight' keeps it
    if footer:
        fig.text(0.5, -0.01, footer, ha='center', va='top', fontsize=9)
    fig.savefig(path, dpi=100, bbox_inches='tight')
    plt.close(fig)
