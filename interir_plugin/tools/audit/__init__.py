"""``interir audit``: numbers that test what the unfolding network's interpretable quantities claim.

The audit runs a network (from an option file) on degraded images with known answers and writes ``audit.json``,
``audit.md`` and ``audit.png``; docs/audit.md defines every figure. The modules, by what they hold:

- :mod:`~interir_plugin.tools.audit.data`: the images (:class:`Sample`, :func:`load_samples`: clean folders,
  CDD-11 layouts, protocol splits), with the renderer of each synthesised component;
- :mod:`~interir_plugin.tools.audit.probes`: the routing probe (:class:`RoutingProbe`) and the intervention;
- :mod:`~interir_plugin.tools.audit.measurements`: one forward pass per image and what needs no other image;
- :mod:`~interir_plugin.tools.audit.statistics`: AUC, held-out nearest centroids, calibration (pure statistics);
- :mod:`~interir_plugin.tools.audit.summaries`: the figures over images (stage PSNR and harm, routing and routing
  per label, active set, map errors, the recogniser's decisions, calibration, per renderer);
- :mod:`~interir_plugin.tools.audit.report`: the targets, the headline and ``audit.md``;
- :mod:`~interir_plugin.tools.audit.figure`: ``audit.png``.

This module runs them: :func:`audit_network` (no files) and :func:`audit` (option file in, files out).
"""
import json
import os
import os.path as osp

import torch

from interir_plugin.tools.audit.data import (
    COMPONENTS,
    DEFAULT_MAX_SIDE,
    DEFAULT_SPLIT,
    Sample,
    load_samples,
    protocol_splits,
)
from interir_plugin.tools.audit.figure import draw_audit_figure
from interir_plugin.tools.audit.measurements import ACTIVE_SET_THRESHOLD, MAP_KEYS, measure
from interir_plugin.tools.audit.probes import RoutingProbe, intervene, intervention_summary
from interir_plugin.tools.audit.report import TARGETS, headline, target_table, write_markdown
from interir_plugin.tools.audit.statistics import (
    auc,
    block_mean,
    calibration,
    chance_rate,
    correlation,
    expected_calibration_error,
    held_out_centroids,
    nearest_centroid_accuracy,
    presence_auc,
    psnr_float,
)
from interir_plugin.tools.audit.summaries import (
    active_set_summary,
    examples,
    map_error_summary,
    presence_summary,
    renderer_summary,
    routing_per_label,
    routing_summary,
    stage_summary,
)
from interir_plugin.tools.forward import round_floats
from interir_plugin.tools.loading import build_restorer, input_channels, resolve_device
from interir_plugin.tools.options import load_option_file

__all__ = ['ACTIVE_SET_THRESHOLD', 'COMPONENTS', 'DEFAULT_MAX_SIDE', 'DEFAULT_SPLIT', 'MAP_KEYS', 'TARGETS',
           'RoutingProbe', 'Sample', 'audit', 'audit_network', 'auc', 'block_mean', 'calibration', 'chance_rate',
           'correlation', 'draw_audit_figure', 'expected_calibration_error', 'headline', 'held_out_centroids',
           'intervene', 'load_samples', 'measure', 'nearest_centroid_accuracy', 'presence_auc', 'protocol_splits',
           'psnr_float', 'target_table', 'write_markdown']
#: Per-image record keys that stay out of ``audit.json`` (arrays for the summaries and the figure).
_INTERNAL = ('routing', 'delta', 'input_stats')


def _measure_all(net, samples, probe, device, log):
    records = []
    for i, sample in enumerate(samples):
        records.append(measure(net, sample, probe, device))
        if (i + 1) % 20 == 0 or i + 1 == len(samples):
            log(f'  measured {i + 1}/{len(samples)} images')
    return records


def audit_network(net, samples, kind, device='cpu', log=print):
    """Every audit metric of ``net`` on ``samples`` (the core of :func:`audit`, without files).

    Args:
        net (nn.Module): Bare network in eval mode, on ``device``.
        samples (list[Sample]): Images (:func:`load_samples`).
        kind (str): ``'synthesised'`` or ``'labelled'`` (for the notes).
        device (str | torch.device): Where ``net`` runs. Default: 'cpu'.
        log (callable): Progress lines. Default: print.

    Returns:
        dict: The metrics (docs/audit.md), ``notes``, ``per_image`` records and ``_examples`` (for the figure).
    """
    if not samples:
        raise ValueError('audit: no images to audit')
    device, notes = torch.device(device), []
    with RoutingProbe(net) as probe:
        records = _measure_all(net, samples, probe, device, log)
        result = stage_summary(records, notes)
        routing, centroids = routing_summary(records, samples, notes)
        result.update(routing)
        result.update(routing_per_label(records, probe, notes))
        result.update(active_set_summary(records, kind, notes))
        result.update(map_error_summary(records, notes))
        result.update(presence_summary(records, samples, notes))
        result.update(renderer_summary(records, samples, notes))
        result.update(intervention_summary(net, samples, records, probe, centroids, device, log, notes))
    result['notes'] = notes
    result['per_image'] = [{k: v for k, v in r.items() if k not in _INTERNAL} for r in records]
    result['_examples'] = examples(samples, records)
    return result


def _write(out_dir, result, examples_):
    """``audit.json``, ``audit.md`` and ``audit.png`` in ``out_dir``; returns their paths."""
    os.makedirs(out_dir, exist_ok=True)
    paths = {ext: osp.join(out_dir, f'audit.{ext}') for ext in ('json', 'md', 'png')}
    with open(paths['json'], 'w', encoding='utf-8') as f:
        json.dump({k: round_floats(v) for k, v in result.items()}, f, indent=1)
    write_markdown(paths['md'], result)
    draw_audit_figure(paths['png'], {**result, '_examples': examples_})
    return paths


def audit(option_path, data, out_dir, categories=None, seed=0, device='auto', max_images=None, log=print,
          max_side=DEFAULT_MAX_SIDE, split=None):
    """Audit an option file's network and write ``audit.json``, ``audit.md`` and ``audit.png`` in ``out_dir``.

    Args:
        option_path (str): Option file; weights from ``path.pretrain_network_g`` (random, with a warning, if unset).
        data (str): Folder of clean images, CDD-11-layout folder or protocol (see :func:`load_samples`).
        out_dir (str): Output folder (created).
        categories (list[str] | None): Categories to synthesise / labels to keep; None: all. Default: None.
        seed (int): Synthesis seed. Default: 0.
        device (str): ``'auto'``, ``'cpu'`` or ``'cuda[:i]'``. Default: 'auto'.
        max_images (int | None): Clean images (or images per source) to use; None: all. Default: None.
        log (callable): Progress lines. Default: print.
        max_side (int | None): Centre-crop side. Default: 256.
        split (str | list[str] | None): Protocol split(s), names or patterns (``'heldout_*'``); None: ``test``.
            Default: None.

    Returns:
        dict: The audit (``audit.json``'s contents) plus ``json``, ``md``, ``png`` (paths) and ``headline``.
    """
    opt = load_option_file(option_path)
    channels = input_channels(opt['network_g'])
    if channels != 3:
        raise ValueError(f'{option_path}: network_g has {channels} input channels; the audit needs an RGB '
                         '(3-channel) network')
    model = build_restorer(opt, resolve_device(device), option_path)
    net = model.get_bare_model(model.net_g).eval()
    samples, kind = load_samples(data, categories, seed, max_images, max_side, split)
    log(f'audit: {opt["network_g"]["type"]} on {len(samples)} {kind} images from {data}')
    result = {'option_file': option_path, 'network': opt['network_g']['type'],
              'weights': (opt.get('path') or {}).get('pretrain_network_g'), 'data': data, 'data_kind': kind,
              'splits': _splits(data, split),
              'labels': list(dict.fromkeys(s.label for s in samples)), 'seed': seed, 'max_side': max_side}
    result.update(audit_network(net, samples, kind, model.device, log))
    examples_ = result.pop('_examples')
    paths = _write(out_dir, result, examples_)
    return {**result, **paths, 'headline': headline(result)}


def _splits(data, split):
    """The protocol splits read (None for a folder)."""
    return None if osp.isdir(data) else protocol_splits(data, split)
