"""``interir explain``: what the unfolding stages did to one image, as one PNG figure and the numbers as JSON.

For every network that returns a list of stage outputs (InterIR, DGUNet, DGUNet+) the figure shows the input
and each stage's image (with its PSNR against ``--gt`` if given). For a network whose ``forward`` takes
``return_aux`` (InterIR), it adds, per stage ``k``:

- the data-fidelity residual ``||P_k x_k Q_k - z||`` (line plot, with the step size ``eta_k`` on a second axis);
- the active-set map: the channel mean of ``Delta_k``, the generalised derivative of the prior's prox (1: the
  prox passes the feature through, 0: it clamps it), on the ``H/s x W/s`` feature grid;
- the expert mix ``alpha`` (which learned knowledge kernels the EConvs of that step recruit; mean over the
  step's EConvs, stacked bars) and the prior gates ``gamma`` (how strongly each fixed image prior -- identity,
  x/y gradient, Laplacian, centre difference -- is switched on; mean over EConvs, grouped bars);
- the left and right degradation factors ``P`` (``h x h``) and ``Q`` (``w x w``) of the first and the last
  step as heat maps (channel means).

The JSON holds every number shown (maps as channel means, per stage) plus the per-EConv ``alpha``/``gamma``.
"""
import inspect
import json
import math
import os

import cv2
import numpy as np
import torch
from basicsr.metrics import calculate_psnr
from basicsr.utils import tensor2img

from interir_plugin.archs.econv import PRIOR_NAMES  # InterIR's fixed image priors, in the order of gamma
from interir_plugin.data.degradations import synthesize
from interir_plugin.tools.imageio import read_image
from interir_plugin.tools.loading import build_restorer, input_channels, resolve_device
from interir_plugin.tools.options import load_option_file
from interir_plugin.utils.padding import crop_to, pad_for_network
from interir_plugin.utils.presence import PRESENCE_PARTS  # the head's presence gates, in order


def _to_display(t):
    """``C x H x W`` tensor in [0, 1] -> ``H x W x 3`` float array for imshow (grey repeated)."""
    a = t.detach().float().clamp(0, 1).cpu().numpy().transpose(1, 2, 0)
    return np.repeat(a, 3, axis=2) if a.shape[2] == 1 else a


def image_tensor(rgb):
    """``H x W x C`` float array -> ``C x H x W`` tensor (contiguous, shares no memory with a view of ``rgb``)."""
    return torch.from_numpy(np.ascontiguousarray(rgb.transpose(2, 0, 1)))


def psnr(a, b):
    """PSNR (dB) of two ``C x H x W`` tensors in [0, 1] after 8-bit rounding (as BasicSR's validation)."""
    return float(calculate_psnr(tensor2img([a]), tensor2img([b]), crop_border=0))


def round_floats(x, digits=5):
    """Nested dicts and lists of floats rounded to ``digits`` significant digits (compact JSON)."""
    if isinstance(x, dict):
        return {k: round_floats(v, digits) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [round_floats(v, digits) for v in x]
    if not isinstance(x, float):
        return x
    return x if x == 0 or not math.isfinite(x) else float(f'{x:.{digits}g}')


def _resize_to_max_side(rgb, max_side):
    """Area-downscale ``H x W x 3`` so that its longer side is at most ``max_side``; return (image, scale)."""
    h, w = rgb.shape[:2]
    scale = max_side / max(h, w) if max_side and max(h, w) > max_side else 1.0
    if scale == 1.0:
        return rgb, 1.0
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return cv2.resize(rgb, size, interpolation=cv2.INTER_AREA), scale


def run_network(net, x):
    """Forward ``x`` (padded to what ``net`` accepts) with the auxiliary outputs when the net offers them.

    Returns:
        tuple: ``(stage outputs cropped back (list), aux dict or None)``.
    """
    padded, size = pad_for_network(x, net)
    with torch.no_grad():
        if 'return_aux' in inspect.signature(net.forward).parameters:
            out, aux = net(padded, return_aux=True)
        else:
            out, aux = net(padded), None
    outputs = list(out) if isinstance(out, (list, tuple)) else [out]
    return crop_to(outputs, size), aux


def aux_numbers(aux):
    """JSON-ready numbers of InterIR's auxiliary outputs for image 0 of the batch (see the module docstring)."""
    stages = len(aux['residual'])
    alpha = [aux['alpha'][k][0].float().cpu() for k in range(stages)]  # E_k x M
    gamma = [aux['gamma'][k][0].float().cpu() for k in range(stages)]  # E_k x 5
    delta = [aux['delta'][k][0].float().cpu() for k in range(stages)]  # C x h x w
    return {
        'residual': [float(aux['residual'][k][0]) for k in range(stages)],
        'eta': [float(aux['eta'][k]) for k in range(stages)],
        'alpha_mean': [a.mean(0).tolist() for a in alpha],
        'gamma_mean': [g.mean(0).tolist() for g in gamma],
        'alpha_per_econv': [a.tolist() for a in alpha],
        'gamma_per_econv': [g.tolist() for g in gamma],
        'prior_names': list(PRIOR_NAMES) if len(PRIOR_NAMES) == gamma[0].shape[-1] else
        [f'prior_{i}' for i in range(gamma[0].shape[-1])],
        'active_set_mean': [float(d.mean()) for d in delta],
        'active_set_fraction': [float((d > 0.5).float().mean()) for d in delta],
        'active_set_map': [d.mean(0).tolist() for d in delta],
        'P': [aux['P'][k][0].float().mean(0).cpu().tolist() for k in range(stages)],
        'Q': [aux['Q'][k][0].float().mean(0).cpu().tolist() for k in range(stages)],
    }


#: Synthesiser / estimated maps drawn by the maps rows, in this order (``layer``: channel mean).
MAP_PANELS = ('illumination', 'gain', 'rain', 'snow', 'transmission', 'layer')


def _figure_layout(images, numbers, map_rows):
    """Figure width, row heights and image aspect for :func:`draw_figure`."""
    ncols = max(len(images), len(MAP_PANELS) + 1 if map_rows else 0)
    width = max(2.3 * ncols, 12)
    aspect = images[0][0].shape[0] / images[0][0].shape[1]
    panel = width / ncols * 0.8  # drawn width of one image panel (inches), after the gaps between panels
    heights = [panel * aspect + 0.4]  # image rows follow the image aspect, plus their titles
    heights += [panel * aspect + 0.5] * len(map_rows)
    if numbers is not None:
        heights += [panel * aspect + 0.3, 3.2, width / 4 * 0.75 + 0.4]  # active sets, curves/bars, P and Q
    return ncols, width, heights


def _draw_image_row(fig, cell, images, ncols):
    row = cell.subgridspec(1, ncols)
    for i, (img, name) in enumerate(images):
        ax = fig.add_subplot(row[0, i])
        ax.imshow(img)
        ax.set_title(name, fontsize=9)
        ax.axis('off')


def _draw_maps_row(fig, cell, title, maps, ncols, columns):
    """One row of physical maps (``{key: 2-D array or float}``): a label panel, then the maps named in
    ``columns`` (one column per key, so rows of true and estimated maps line up)."""
    row = cell.subgridspec(1, ncols)
    scalars = '\n'.join(f'{k} {v:.3g}' for k, v in maps.items() if np.ndim(v) == 0)
    ax = fig.add_subplot(row[0, 0])
    ax.text(0.5, 0.5, title + (f'\n{scalars}' if scalars else ''), ha='center', va='center', fontsize=9,
            transform=ax.transAxes, wrap=True)
    ax.axis('off')
    for col, key in enumerate(columns):
        if np.ndim(maps.get(key, 0)) < 2:
            continue
        m = np.asarray(maps[key], np.float32)
        m = m.mean(-1) if m.ndim == 3 else m
        ax = fig.add_subplot(row[0, col + 1])
        if key == 'layer':
            lim = float(np.abs(m).max()) or 1.0
            im = ax.imshow(m, cmap='RdBu_r', vmin=-lim, vmax=lim)
        else:
            im = ax.imshow(m, cmap='magma' if key in ('rain', 'snow') else 'viridis', vmin=0,
                           vmax=max(1.0, float(m.max())))
        ax.set_title(f'{key} (mean {m.mean():.2f})', fontsize=8)
        ax.axis('off')
        fig.colorbar(im, ax=ax, fraction=0.046, pad=0.02)


def _draw_active_sets(fig, cell, numbers, ncols, step_names):
    row = cell.subgridspec(1, ncols)
    ax = fig.add_subplot(row[0, 0])
    ax.text(0.5, 0.5, 'active set: mean of\nDelta over channels\n(1 = prox passes,\n0 = prox clamps)',
            ha='center', va='center', fontsize=9, transform=ax.transAxes)
    ax.axis('off')
    axes = []
    maps = [np.asarray(m) for m in numbers['active_set_map']]
    low, high = min(m.min() for m in maps), max(m.max() for m in maps)  # one scale for every stage
    for k, m in enumerate(maps):
        ax = fig.add_subplot(row[0, k + 1])
        im = ax.imshow(m, cmap='viridis', vmin=low, vmax=max(high, low + 1e-6))
        ax.set_title(f'{step_names[k]}: mean {numbers["active_set_mean"][k]:.2f}', fontsize=8)
        ax.axis('off')
        axes.append(ax)
    fig.colorbar(im, ax=axes, fraction=0.02, pad=0.01)


def _stage_axis(ax, stages):
    ticks = list(range(1, stages + 1))
    ax.set_xticks(ticks, [str(k) for k in range(1, stages)] + ['final'])
    ax.set_xlabel('stage')
    return ticks


def _draw_residual(ax, numbers):
    ticks = list(range(1, len(numbers['residual']) + 1))
    lines = ax.plot(ticks, numbers['residual'], 'o-', color='C0', label='||P x Q - z||')
    _stage_axis(ax, len(ticks))
    ax.set_title('data-fidelity residual and step size')
    ax.grid(alpha=0.3)
    ax2 = ax.twinx()
    lines += ax2.plot(ticks, numbers['eta'], 's--', color='C3', ms=4, label='eta (right axis)')
    ax2.ticklabel_format(axis='y', style='sci', scilimits=(-2, 2), useOffset=False)
    ax.legend(lines, [ln.get_label() for ln in lines], fontsize=7, ncol=2, loc='upper center',
              bbox_to_anchor=(0.5, -0.16))  # below the axis: the curves may cross any corner


def _draw_alpha(ax, numbers):
    alpha = np.asarray(numbers['alpha_mean'])  # stages x M
    ticks = _stage_axis(ax, alpha.shape[0])
    bottom = np.zeros(alpha.shape[0])
    for m in range(alpha.shape[1]):
        ax.bar(ticks, alpha[:, m], bottom=bottom, label=f'expert {m + 1}')
        bottom += alpha[:, m]
    ax.set_ylim(0, 1.25)  # room for the legend above the bars
    ax.set_title('expert mix alpha (mean over EConvs)')
    ax.legend(fontsize=7, ncol=4, loc='upper center')


def _draw_gamma(ax, numbers):
    gamma = np.asarray(numbers['gamma_mean'])  # stages x P
    ticks = _stage_axis(ax, gamma.shape[0])
    width = 0.8 / gamma.shape[1]
    for p, name in enumerate(numbers['prior_names']):
        ax.bar([t + (p - (gamma.shape[1] - 1) / 2) * width for t in ticks], gamma[:, p], width, label=name)
    ax.set_ylim(0, 1.3)
    ax.set_title('prior gates gamma (mean over EConvs)')
    ax.legend(fontsize=7, ncol=3, loc='upper center')


def _draw_factors(fig, cell, numbers, step_names):
    row = cell.subgridspec(1, 4, wspace=0.5)
    last = len(numbers['P']) - 1
    for i, (key, k) in enumerate((('P', 0), ('P', last), ('Q', 0), ('Q', last))):
        ax = fig.add_subplot(row[0, i])
        mat = np.asarray(numbers[key][k])
        lim = float(np.abs(mat).max()) or 1.0
        im = ax.imshow(mat, cmap='RdBu_r', vmin=-lim, vmax=lim)
        ax.set_title(f'{key} after {step_names[k]} ({mat.shape[0]}x{mat.shape[1]})', fontsize=9)
        fig.colorbar(im, ax=ax, fraction=0.046, pad=0.03)


def draw_figure(path, title, images, numbers=None, map_rows=()):
    """Draw the explain figure (layout in the module docstring) and save it as PNG.

    Args:
        path (str): PNG file.
        title (str): Figure title.
        images (list[tuple[ndarray, str]]): ``(H x W x 3 image, panel title)`` for the input, then every stage.
        numbers (dict | None): :func:`aux_numbers`, or None for stage images only. Default: None.
        map_rows (tuple[tuple[str, dict]]): ``(row title, {key: H x W map or float})`` rows of physical maps
            (the synthesiser's, the network's estimates), drawn under the images. Default: ().
    """
    import matplotlib

    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    ncols, width, heights = _figure_layout(images, numbers, map_rows)
    fig = plt.figure(figsize=(width, sum(heights) * 1.2))
    grid = fig.add_gridspec(len(heights), 1, height_ratios=heights, hspace=0.3, top=0.95, bottom=0.03)
    _draw_image_row(fig, grid[0], images, ncols)
    columns = [k for k in MAP_PANELS if any(np.ndim(maps.get(k, 0)) >= 2 for _, maps in map_rows)]
    for r, (row_title, maps) in enumerate(map_rows, start=1):
        _draw_maps_row(fig, grid[r], row_title, maps, ncols, columns)
    if numbers is not None:
        first = 1 + len(map_rows)
        stages = len(numbers['residual'])
        step_names = [f'stage {k}' for k in range(1, stages)] + ['final step']
        _draw_active_sets(fig, grid[first], numbers, ncols, step_names)
        row = grid[first + 1].subgridspec(1, 3, wspace=0.45)
        _draw_residual(fig.add_subplot(row[0, 0]), numbers)
        _draw_alpha(fig.add_subplot(row[0, 1]), numbers)
        _draw_gamma(fig.add_subplot(row[0, 2]), numbers)
        _draw_factors(fig, grid[first + 2], numbers, step_names)
    fig.suptitle(title, y=1.0, va='bottom')  # above the panels; bbox_inches='tight' keeps it
    fig.savefig(path, dpi=100, bbox_inches='tight')
    plt.close(fig)


def _summarise_maps(maps):
    """JSON summary of physical maps: floats as they are, arrays as ``{mean, min, max}``."""
    out = {}
    for key, value in maps.items():
        if np.ndim(value) == 0:
            out[key] = float(value)
        else:
            a = np.asarray(value, np.float64)
            out[key] = {'mean': float(a.mean()), 'min': float(a.min()), 'max': float(a.max())}
    return out


def _caller_maps(maps, size, new_size):
    """Maps passed by a caller: each array must have the input's ``size``; resized with the input."""
    if not isinstance(maps, dict):
        raise ValueError(f'maps must be a dict of physical maps, got {type(maps).__name__}')
    out = {}
    for key, value in maps.items():
        if np.ndim(value) == 0:
            out[key] = float(value)
            continue
        a = np.asarray(value, np.float32)
        if tuple(a.shape[:2]) != tuple(size):
            raise ValueError(f'maps[{key!r}] is {a.shape[0]}x{a.shape[1]} but the input is {size[0]}x{size[1]}')
        out[key] = a if tuple(size) == tuple(new_size) else cv2.resize(a, new_size[::-1], interpolation=cv2.INTER_AREA)
    return out


def _estimated_maps(aux, size):
    """The network's physical estimates of its final output (``aux['maps'][-1]``, image 0), cropped to ``size``."""
    entry = (aux or {}).get('maps') or [None]
    out = {}
    for key, value in (entry[-1] or {}).items():
        a = value[0].detach().float().cpu()
        if key == 'presence':  # the head's gates: one number per degradation
            out.update({f'present {part}': float(v) for part, v in zip(PRESENCE_PARTS, a)})
            continue
        out[key] = float(a.mean()) if a[0].numel() == 1 else a[..., :size[0], :size[1]].numpy().transpose(1, 2, 0)
    return out


def _prepare_input(input_path, gt_path, max_side, category, seed, maps):
    """Decode (and, with ``category``, synthesise) the input; return the image, its RGB, scale, target, maps, info."""
    image = read_image(input_path)
    size = image.size
    rgb, scale = _resize_to_max_side(image.rgb, max_side)
    if category is not None:
        if gt_path is not None:
            raise ValueError(f'--gt {gt_path} cannot be combined with --category {category}: the clean --input '
                             f'{input_path} is the target')
        if maps is not None:
            raise ValueError('maps cannot be passed with a category: the synthesiser makes them')
        degraded, drawn, maps = synthesize(rgb, category, seed, 0, return_maps=True)
        image.rgb = degraded
        return image, degraded, scale, rgb, maps, {'category': category, 'seed': seed, 'drawn': drawn}
    image.rgb = rgb
    maps = None if maps is None else _caller_maps(maps, size, rgb.shape[:2])
    if gt_path is None:
        return image, rgb, scale, None, maps, {}
    gt_img = read_image(gt_path)
    gt_rgb = _resize_to_max_side(gt_img.rgb, max_side)[0]
    if gt_rgb.shape[:2] != rgb.shape[:2]:
        raise ValueError(f'--gt {gt_path} is {gt_img.size[0]}x{gt_img.size[1]} but --input {input_path} is '
                         f'{size[0]}x{size[1]}; they must be the same size')
    return image, rgb, scale, gt_rgb, maps, {'gt': gt_path}


def explain(option_path, input_path, out_dir, gt_path=None, device='auto', max_side=512, category=None, seed=0,
            maps=None):
    """Run an option file's network on one image and write ``explain.png``, ``explain.json`` and the stage images.

    Args:
        option_path (str): Option file; weights from ``path.pretrain_network_g`` (random, with a warning, if unset).
        input_path (str): Degraded image; with ``category``, the clean image to degrade.
        out_dir (str): Output folder (created).
        gt_path (str, optional): Clean image of the same size, for per-stage PSNR. Default: None.
        device (str): ``'auto'``, ``'cpu'`` or ``'cuda[:i]'``. Default: 'auto'.
        max_side (int | None): Images whose longer side exceeds this are area-downscaled first (InterIR's cost
            grows with ``h^2 w``); None keeps the size. Default: 512.
        category (str | None): A CDD-11 category: ``input_path`` is clean, synthesised into this category with
            ``seed`` (index 0) after the downscale; the clean image is the target and the synthesiser's maps are
            drawn. Default: None.
        seed (int): Synthesis seed (with ``category``). Default: 0.
        maps (dict | None): Physical maps of the input, as the synthesiser's (``{key: H x W map or float}``, the
            input's size), to draw beside the network's quantities. Default: None.

    Returns:
        dict: ``png``, ``json`` paths and ``numbers`` (the JSON contents).
    """
    opt = load_option_file(option_path)
    model = build_restorer(opt, resolve_device(device), option_path)
    net = model.get_bare_model(model.net_g).eval()
    channels = input_channels(opt['network_g'])
    image, rgb, scale, gt_rgb, true_maps, info = _prepare_input(input_path, gt_path, max_side, category, seed, maps)
    x = torch.from_numpy(image.network_input(channels))[None].to(model.device)
    outputs, aux = run_network(net, x)
    numbers = {'option_file': option_path, 'network': opt['network_g']['type'], 'input': input_path,
               'weights': (opt.get('path') or {}).get('pretrain_network_g'), 'input_size': list(x.shape[-2:]),
               'resize_scale': scale, 'stages': len(outputs), **info}
    titles = ['input' if category is None else f'input ({category})'] + \
        [f'stage {k + 1}' for k in range(len(outputs) - 1)] + ['final']
    if gt_rgb is not None:
        gt = torch.from_numpy(np.ascontiguousarray(gt_rgb.transpose(2, 0, 1)))
        lq = torch.from_numpy(np.ascontiguousarray(rgb.transpose(2, 0, 1)))
        numbers['input_psnr'] = psnr(lq, gt)
        numbers['stage_psnr'] = [psnr(o[0, :3].cpu() if o.shape[1] >= 3 else o[0].cpu().repeat(3, 1, 1), gt)
                                 for o in outputs]
        titles = [f'{t}\n{p:.2f} dB' for t, p in zip(titles, [numbers['input_psnr'], *numbers['stage_psnr']])]
    map_rows = []
    if true_maps is not None:
        numbers['true_maps'] = _summarise_maps(true_maps)
        source = f'synthesiser\n{category}, seed {seed}' if category is not None else 'given maps'
        map_rows.append((source, true_maps))
    estimated = _estimated_maps(aux, x.shape[-2:])
    if estimated:
        numbers['estimated_maps'] = _summarise_maps(estimated)
        map_rows.append(('network estimates\n(final output)', estimated))
    if aux is not None:
        numbers.update(aux_numbers(aux))
    os.makedirs(out_dir, exist_ok=True)
    for k, o in enumerate(outputs):
        img = (_to_display(o[0]) * 255).round().astype(np.uint8)
        cv2.imwrite(os.path.join(out_dir, f'stage_{k + 1:02d}.png'), img[:, :, ::-1])
    paths = {'png': os.path.join(out_dir, 'explain.png'), 'json': os.path.join(out_dir, 'explain.json')}
    panels = list(zip([_to_display(x[0])] + [_to_display(o[0]) for o in outputs], titles))
    draw_figure(paths['png'], f'{opt["network_g"]["type"]} on {os.path.basename(input_path)}', panels,
                numbers if aux is not None else None, map_rows)
    with open(paths['json'], 'w', encoding='utf-8') as f:
        json.dump({k: round_floats(v) for k, v in numbers.items()}, f)
    return {**paths, 'numbers': numbers}
