"""What InterIR's physical head decided for one image, for ``interir infer --maps``: its maps as PNGs and the
recogniser's decisions as JSON, beside the restored image.

The maps are those of the final output (``aux['maps'][-1]`` of ``net(x, return_aux=True)``): gain ``G``,
transmission ``t``, airlight ``A``, additive layer ``R`` and its streak part (rain and snow), for the formation model
``D = (J G + R) t + A (1 - t)``. Large images are tiled as the restoration is (the model's ``tile`` and
``tile_overlap``) and every map is blended across tiles with the same windows as the image
(:func:`interir_plugin.utils.tiling.tiled_apply`); the airlight and the recogniser's probabilities and gates, one
value per tile, are blended likewise, so the JSON gives their area-weighted mean and lists each tile's own. Without
self-ensemble the restored image comes from the same pass (identical to ``model.restore``); with it, the image is
the ensemble's and the maps come from one plain pass.

PNG files (8-bit; ``<stem>`` is the output's name without its extension): ``<stem>_gain.png`` (``G`` clipped to
[0, 1]; 1: unchanged), ``<stem>_transmission.png`` (``t``), ``<stem>_airlight.png`` (``A`` in colour),
``<stem>_layer.png`` (``0.5 + R``: ``R`` is signed, mid-grey is nothing removed), ``<stem>_streak.png`` (the streak
layer, >= 0). ``<stem>_maps.json``: every map's mean, min and max before clipping, the airlight per channel, the
presence probabilities ``sigmoid(logit)`` and gates per part (low, haze, rain, snow) and the parts decided present
(gate > 0.5), per tile when tiled.
"""
import inspect
import json
import os

import cv2
import numpy as np
import torch

from interir_plugin.tools.forward import round_floats, run_network
from interir_plugin.utils.presence import PRESENCE_PARTS
from interir_plugin.utils.tiling import tile_starts, tiled_apply

#: The head's maps written, with how each is put in [0, 1] for its PNG: ``(key, offset)``.
MAP_FILES = (('gain', 0.0), ('transmission', 0.0), ('airlight', 0.0), ('layer', 0.5), ('streak', 0.0))
#: Gates above this count as "present" (as ``interir explain`` and ``interir audit`` read them).
GATE_PRESENT = 0.5


def map_targets(output_path):
    """``{key: path}`` of the files ``--maps`` writes beside ``output_path`` (the map PNGs and ``json``)."""
    stem = os.path.splitext(output_path)[0]
    return {**{key: f'{stem}_{key}.png' for key, _ in MAP_FILES}, 'json': f'{stem}_maps.json'}


def check_has_maps(net, what):
    """Raise ``ValueError`` unless ``net`` can return InterIR's auxiliary outputs (``forward(x, return_aux=True)``)."""
    if 'return_aux' not in inspect.signature(net.forward).parameters:
        raise ValueError(f'--maps needs a network with a physical head (InterIR); {what} builds '
                         f'{type(net).__name__}, which has no maps')


class _MapPass:
    """One forward pass (of a tile) giving the final output and the head's maps stacked on channels; it records the
    channel layout and each tile's decisions."""

    def __init__(self, net):
        self.net, self.layout, self.tiles = net, None, []

    def __call__(self, x):
        outputs, aux = run_network(self.net, x)
        maps = ((aux or {}).get('maps') or [None])[-1]
        if maps is None:
            raise ValueError(f'--maps: {type(self.net).__name__} returned no physical maps (a residual head?)')
        h, w = x.shape[-2:]
        planes = {'output': outputs[-1].float()}
        for key, _ in MAP_FILES:
            if key in maps:
                m = maps[key].float()
                planes[key] = m.expand(-1, -1, h, w) if m.shape[-2:] == (1, 1) else m[..., :h, :w]
        logits = aux.get('presence_logits')
        if logits is not None:
            planes['probability'] = torch.sigmoid(logits.float())[..., None, None].expand(-1, -1, h, w)
            planes['gates'] = maps['presence'].float()[..., None, None].expand(-1, -1, h, w)
            self.tiles.append({'probability': planes['probability'][0, :, 0, 0].tolist(),
                               'gates': planes['gates'][0, :, 0, 0].tolist()})
        self.layout = [(key, p.shape[1]) for key, p in planes.items()]
        return torch.cat(list(planes.values()), 1)


def _tile_boxes(size, tile, overlap):
    """``[y0, x0, h, w]`` of every tile, in :func:`tiled_apply`'s order."""
    h, w = size
    th, tw = min(tile, h), min(tile, w)
    return [[y0, x0, th, tw] for y0 in tile_starts(h, th, overlap) for x0 in tile_starts(w, tw, overlap)]


def restore_with_maps(model, x):
    """Restore ``x`` (``1 x C x H x W`` on ``model.device``) and estimate the head's maps over the whole image.

    Args:
        model (UnfoldingRestorationModel): Test-mode model (its ``tile``, ``tile_overlap``, ``self_ensemble``).
        x (Tensor): The input.

    Returns:
        tuple: ``(output, planes, tiles)``: the restored ``C x H x W`` float32 array in [0, 1], ``{key: H x W x c
        array}`` (the maps, and ``probability`` and ``gates`` with a recogniser) and the per-tile decisions (with
        ``box``; ``[]`` for a whole-image pass or a network without a recogniser).
    """
    net = model.get_bare_model(model.net_g)
    net.eval()
    fn = _MapPass(net)
    with torch.no_grad():
        stacked = fn(x) if model.tile is None else tiled_apply(fn, x, model.tile, model.tile_overlap)
        ensembled = model.restore(x, net)[0] if model.self_ensemble else None
    planes, at = {}, 0
    for key, channels in fn.layout:
        planes[key] = stacked[0, at:at + channels].float().cpu().numpy().transpose(1, 2, 0)
        at += channels
    restored = planes.pop('output').transpose(2, 0, 1)
    if ensembled is not None:
        restored = ensembled.float().cpu().numpy()
    tiles = []
    if model.tile is not None and len(fn.tiles) > 1:
        boxes = _tile_boxes(x.shape[-2:], model.tile, model.tile_overlap)
        tiles = [{'box': box, **decision} for box, decision in zip(boxes, fn.tiles)]
    output = np.clip(restored, 0, 1).astype(np.float32)
    return output, planes, tiles


def _png(path, plane, offset):
    """Write ``H x W x c`` (c = 1 or 3, RGB) values ``offset + plane`` clipped to [0, 1] as an 8-bit PNG."""
    img = np.clip(np.rint((plane + offset) * 255), 0, 255).astype(np.uint8)
    img = img[:, :, 0] if img.shape[2] == 1 else np.ascontiguousarray(img[:, :, ::-1])
    if not cv2.imwrite(path, img):
        raise OSError(f'cannot write {path}')


def _presence(planes, tiles):
    """The recogniser's decisions over the image: per part the (area-weighted) probability and gate."""
    if 'probability' not in planes:
        return None
    probability, gates = (planes[k].reshape(-1, planes[k].shape[-1]).mean(0) for k in ('probability', 'gates'))
    return {'parts': list(PRESENCE_PARTS), 'probability': probability.tolist(), 'gates': gates.tolist(),
            'present': [p for p, g in zip(PRESENCE_PARTS, gates) if g > GATE_PRESENT],
            'per_tile': [{**t, 'present': [p for p, g in zip(PRESENCE_PARTS, t['gates']) if g > GATE_PRESENT]}
                         for t in tiles]}


def write_maps(output_path, planes, tiles, info):
    """Write the map PNGs and ``<stem>_maps.json`` beside ``output_path``; return the written paths.

    Args:
        output_path (str): The restored image's path.
        planes (dict): From :func:`restore_with_maps`.
        tiles (list[dict]): From :func:`restore_with_maps`.
        info (dict): Added to the JSON first (``input``, ``weights``, ``tile``, ...).

    Returns:
        list[str]: The PNGs, then the JSON.
    """
    targets, written = map_targets(output_path), []
    size = next(iter(planes.values())).shape[:2]
    record = {**info, 'output': output_path, 'size': list(size), 'maps': {}}
    for key, offset in MAP_FILES:
        if key not in planes:
            continue
        _png(targets[key], planes[key], offset)
        plane = planes[key]
        record['maps'][key] = {'file': os.path.basename(targets[key]), 'mean': float(plane.mean()),
                               'min': float(plane.min()), 'max': float(plane.max()),
                               'png': f'{offset:g} + value, clipped to [0, 1]' if offset else 'clipped to [0, 1]'}
        written.append(targets[key])
    if 'airlight' in planes:
        record['airlight_per_channel'] = planes['airlight'].reshape(-1, planes['airlight'].shape[-1]).mean(0).tolist()
    record['presence'] = _presence(planes, tiles)
    with open(targets['json'], 'w', encoding='utf-8') as f:
        json.dump(round_floats(record), f, indent=1)
    written.append(targets['json'])
    return written
