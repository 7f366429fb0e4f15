"""``interir explain``: what the unfolding stages did to one image, as one PNG figure and the numbers as JSON.

For every network that returns a list of stage outputs (InterIR, DGUNet, DGUNet+) the figure shows the input and
each stage's image (with its PSNR when the clean image is known: ``--gt``, or ``--category`` with a clean input).
With ``--category`` (and ``--renderers``) the clean input is synthesised and the synthesiser's physical maps are the
truth. For a network whose ``forward`` takes ``return_aux`` (InterIR) it adds
(:mod:`~interir_plugin.tools.explain_figure` has the layout):

- the physical maps of the final step (gain, transmission, additive layer, streak layer; the airlight per channel)
  beside the true ones;
- the active set ``1 - Delta`` of every step beside the true rain / snow map, with its AUC as their detector;
- the data-fidelity residual ``||P_k x_k Q_k - z||`` and step size per step, the recogniser's probabilities, and
  this image's expert mix ``alpha`` and prior gates ``gamma`` per step.

No panel shows a constant (``skipped_panels`` in the JSON says which were left out and their value). The routing
per label (labels x experts, labels x gates) needs many images: ``interir audit`` draws it. The JSON holds every
number shown plus the per-EConv ``alpha``/``gamma`` and the factors ``P``, ``Q`` (channel means) per step.
"""
import json
import os

import cv2
import numpy as np
import torch

from interir_plugin.archs.econv import PRIOR_NAMES  # InterIR's fixed image priors, in the order of gamma
from interir_plugin.data.degradations import synthesize
from interir_plugin.tools.audit.measurements import ACTIVE_SET_THRESHOLD, airlight_per_channel, presence_of
from interir_plugin.tools.audit.statistics import auc, block_mean
from interir_plugin.tools.explain_figure import active_set_panels, draw_figure, map_columns, plot_panels
from interir_plugin.tools.forward import image_tensor, psnr, round_floats, run_network
from interir_plugin.tools.imageio import read_image
from interir_plugin.tools.loading import build_restorer, input_channels, resolve_device
from interir_plugin.tools.options import load_option_file
from interir_plugin.utils.padding import pad_for_network
from interir_plugin.utils.presence import PRESENCE_PARTS  # the head's presence gates, in order

__all__ = ['ROUTING_PER_LABEL', 'aux_numbers', 'explain', 'image_tensor', 'psnr', 'round_floats', 'run_network']
#: Where the routing per label is (one image cannot show it).
ROUTING_PER_LABEL = ('routing per label (labels x experts, labels x prior gates) needs many images: run interir '
                     'audit (audit.png, audit.md "Routing per label")')


def _to_display(t):
    """``C x H x W`` tensor in [0, 1] -> ``H x W x 3`` float array for imshow (grey repeated)."""
    a = t.detach().float().clamp(0, 1).cpu().numpy().transpose(1, 2, 0)
    return np.repeat(a, 3, axis=2) if a.shape[2] == 1 else a


def _resize_to_max_side(rgb, max_side):
    """Area-downscale ``H x W x 3`` so that its longer side is at most ``max_side``; return (image, scale)."""
    h, w = rgb.shape[:2]
    scale = max_side / max(h, w) if max_side and max(h, w) > max_side else 1.0
    if scale == 1.0:
        return rgb, 1.0
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return cv2.resize(rgb, size, interpolation=cv2.INTER_AREA), scale


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
    """The network's physical estimates of its final output (``aux['maps'][-1]``, image 0): maps cropped to ``size``
    (``H x W x C``), the airlight per channel; the head's presence gates apart (``present <part>``)."""
    entry = (aux or {}).get('maps') or [None]
    out = {}
    for key, value in (entry[-1] or {}).items():
        a = value[0].detach().float().cpu()
        if key == 'presence':  # the head's gates: one number per degradation
            out.update({f'present {part}': float(v) for part, v in zip(PRESENCE_PARTS, a)})
        elif a[0].numel() == 1:  # one value per channel (the airlight)
            out[key] = a.flatten().numpy()
        else:
            out[key] = a[..., :size[0], :size[1]].numpy().transpose(1, 2, 0)
    return out


def _synthesis_spec(category, renderers):
    """The synthesis spec of ``category`` with ``renderers`` (``{degradation: renderer}``), checked there."""
    if renderers is None:
        return category
    if not isinstance(renderers, dict):
        raise ValueError(f'renderers must map degradations to renderer names, got {renderers!r}')
    return {'category': category, 'renderers': dict(renderers)}


def _prepare_input(input_path, gt_path, max_side, category, seed, maps, renderers=None):
    """Decode (and, with ``category``, synthesise) the input; return the image, its RGB, scale, target, maps, info."""
    image = read_image(input_path)
    size = image.size
    rgb, scale = _resize_to_max_side(image.rgb, max_side)
    if category is None and renderers is not None:
        raise ValueError(f'renderers {renderers} need a category: they choose how the clean input is degraded')
    if category is not None:
        if gt_path is not None:
            raise ValueError(f'--gt {gt_path} cannot be combined with --category {category}: the clean --input '
                             f'{input_path} is the target')
        if maps is not None:
            raise ValueError('maps cannot be passed with a category: the synthesiser makes them')
        degraded, drawn, maps = synthesize(rgb, _synthesis_spec(category, renderers), seed, 0, return_maps=True)
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


def _presence(aux, category):
    """The recogniser's probabilities, the head's gates and (synthesised) the truth, or None."""
    presence = presence_of(aux)
    if presence is None:
        return None
    probability, gates = presence
    out = {'probability': dict(zip(PRESENCE_PARTS, probability))}
    if gates is not None:
        out['gates'] = dict(zip(PRESENCE_PARTS, gates))
    if category is not None:  # synthesised: the category's parts are the truth
        parts = category.split('_')
        out['truth'] = {p: p in parts for p in PRESENCE_PARTS}
    return out


def _active_set(numbers, true_maps, scale, size, skipped):
    """The active-set row (:func:`active_set_panels`) and the per-step AUC of ``1 - Delta`` against the true rain /
    snow blocks (``{rain|snow: [auc per step]}``, empty without that truth)."""
    deltas = [np.asarray(m) for m in numbers['active_set_map']]
    rows, cols = size[0] // scale, size[1] // scale
    truth, aucs = None, {}
    for key in ('rain', 'snow'):
        if rows and cols and key in (true_maps or {}) and np.ndim(true_maps[key]) == 2:
            grid = block_mean(true_maps[key], scale, rows, cols)
            truth = grid if truth is None else truth + grid
            aucs[key] = [auc(1 - d[:rows, :cols], grid >= ACTIVE_SET_THRESHOLD[key]) for d in deltas]
    names = [f'step {k}' for k in range(1, len(deltas))] + ['final step']
    scores = [max((v[k] for v in aucs.values() if v[k] is not None), default=None) for k in range(len(deltas))]
    return active_set_panels([(n, 1 - d, s) for n, d, s in zip(names, deltas, scores)], truth, skipped), aucs


def _airlight(estimated, true_maps):
    """``{network: per-channel values, truth: per-channel (or one) value}`` or None without an estimate."""
    if 'airlight' not in (estimated or {}):
        return None
    out = {'network': np.asarray(estimated['airlight'], np.float64)}
    if 'airlight' in (true_maps or {}):
        out['truth'] = airlight_per_channel(true_maps['airlight'])
    return out


def _stage_titles(outputs, category, rgb, gt_rgb, numbers):
    """Panel titles of the input and every stage (with their PSNR when the target is known; also in ``numbers``)."""
    titles = ['input' if category is None else f'input ({category})'] + \
        [f'stage {k + 1}' for k in range(len(outputs) - 1)] + ['final']
    if gt_rgb is None:
        return titles
    gt, lq = image_tensor(gt_rgb), image_tensor(rgb)
    numbers['input_psnr'] = psnr(lq, gt)
    numbers['stage_psnr'] = [psnr(o[0, :3].cpu() if o.shape[1] >= 3 else o[0].cpu().repeat(3, 1, 1), gt)
                             for o in outputs]
    return [f'{t}\nPSNR {p:.2f} dB' for t, p in zip(titles, [numbers['input_psnr'], *numbers['stage_psnr']])]


def _panels(net, x, aux, true_maps, category, numbers):
    """Everything the figure draws beside the stage images, filling ``numbers`` with what it shows."""
    skipped = []
    estimated = _estimated_maps(aux, x.shape[-2:])
    if true_maps is not None:
        numbers['true_maps'] = _summarise_maps(true_maps)
    if estimated:
        numbers['estimated_maps'] = _summarise_maps(estimated)
    columns, active = map_columns(true_maps, estimated, skipped), []
    presence = _presence(aux, category)
    if presence is not None:
        numbers['presence'] = presence
    if aux is not None:
        numbers.update(aux_numbers(aux))
        scale = pad_for_network(x, net)[0].shape[-2] // len(numbers['active_set_map'][0])
        active, numbers['active_set_auc'] = _active_set(numbers, true_maps, scale, x.shape[-2:], skipped)
        numbers['routing_per_label'] = ROUTING_PER_LABEL
    plots = plot_panels(numbers if aux is not None else None, presence, _airlight(estimated, true_maps), skipped)
    numbers['skipped_panels'] = skipped
    return {'columns': columns, 'active': active, 'plots': plots}


def explain(option_path, input_path, out_dir, gt_path=None, device='auto', max_side=512, category=None, seed=0,
            maps=None, renderers=None):
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
        renderers (dict | None): With ``category``: ``{degradation: renderer}`` (``{'haze': 'fog'}``), the formation
            model of each component (docs/data.md); None: the original ones. Default: None.

    Returns:
        dict: ``png``, ``json`` paths and ``numbers`` (the JSON contents).
    """
    opt = load_option_file(option_path)
    model = build_restorer(opt, resolve_device(device), option_path)
    net = model.get_bare_model(model.net_g).eval()
    channels = input_channels(opt['network_g'])
    image, rgb, scale, gt_rgb, true_maps, info = _prepare_input(input_path, gt_path, max_side, category, seed, maps,
                                                                renderers)
    x = torch.from_numpy(image.network_input(channels))[None].to(model.device)
    outputs, aux = run_network(net, x)
    numbers = {'option_file': option_path, 'network': opt['network_g']['type'], 'input': input_path,
               'weights': (opt.get('path') or {}).get('pretrain_network_g'), 'input_size': list(x.shape[-2:]),
               'resize_scale': scale, 'stages': len(outputs), **info}
    titles = _stage_titles(outputs, category, rgb, gt_rgb, numbers)
    panels = _panels(net, x, aux, true_maps, category, numbers)
    os.makedirs(out_dir, exist_ok=True)
    for k, o in enumerate(outputs):
        img = (_to_display(o[0]) * 255).round().astype(np.uint8)
        cv2.imwrite(os.path.join(out_dir, f'stage_{k + 1:02d}.png'), img[:, :, ::-1])
    paths = {'png': os.path.join(out_dir, 'explain.png'), 'json': os.path.join(out_dir, 'explain.json')}
    images = list(zip([_to_display(x[0])] + [_to_display(o[0]) for o in outputs], titles))
    draw_figure(paths['png'], f'{opt["network_g"]["type"]} on {os.path.basename(input_path)}', images,
                footer=ROUTING_PER_LABEL if aux is not None else None, **panels)
    with open(paths['json'], 'w', encoding='utf-8') as f:
        json.dump({k: round_floats(v) for k, v in numbers.items()}, f)
    return {**paths, 'numbers': numbers}
