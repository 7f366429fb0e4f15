"""Summaries over images of the per-image records (:mod:`~interir_plugin.tools.audit.measurements`): stage PSNR and
harm, residual, routing (accuracy, AUCs, routing per label), active set, map errors, the recogniser's decisions and
calibration, and the figures per renderer.

Each summary returns the ``audit.json`` keys it fills; a figure that does not apply is None and a line in ``notes``
says why.
"""
import numpy as np

from interir_plugin.archs.econv import PRIOR_NAMES
from interir_plugin.tools.audit.data import COMPONENTS
from interir_plugin.tools.audit.measurements import ACTIVE_SET_THRESHOLD, MAP_KEYS
from interir_plugin.tools.audit.statistics import (
    block_mean,
    calibration,
    chance_rate,
    held_out_centroids,
    mean_or_none,
    nearest_centroid_accuracy,
    presence_auc,
)
from interir_plugin.utils.metrics import harmed


def _harm_rate(records):
    return float(np.mean([harmed(r['stage_psnr'][-1], r['input_psnr']) for r in records]))


def stage_summary(records, notes):
    """Stage PSNR (mean per stage, per label, share rising), input PSNR, harm rate and the residual."""
    out = {'stages': len(records[0]['stage_psnr']),
           'input_psnr': mean_or_none(r['input_psnr'] for r in records),
           'stage_psnr': np.mean([r['stage_psnr'] for r in records], 0).tolist(),
           'stage_psnr_rises': float(np.mean([r['stage_psnr'][-1] > r['stage_psnr'][0] for r in records])),
           'harm_rate': _harm_rate(records)}
    out['stage_psnr_gain'] = out['stage_psnr'][-1] - out['stage_psnr'][0]
    labels = list(dict.fromkeys(r['label'] for r in records))
    out['stage_psnr_per_label'] = {n: np.mean([r['stage_psnr'] for r in records if r['label'] == n], 0).tolist()
                                   for n in labels}
    if 'residual' in records[0]:
        out['residual'] = np.mean([r['residual'] for r in records], 0).tolist()
        out['residual_falls'] = float(np.mean([r['residual'][-1] < r['residual'][0] for r in records]))
    else:
        out['residual'] = out['residual_falls'] = None
        notes.append('residual: the network returns no aux residual')
    return out


def routing_summary(records, samples, notes):
    """Routing accuracy, chance and component AUCs; also each image's held-out label centroids (intervention)."""
    if 'routing' not in records[0]:
        notes.append('routing: the network has no EConv')
        return {'routing_accuracy': None, 'routing_chance': None, 'routing_auc': None}, None
    labels, groups = [r['label'] for r in records], [s.group for s in samples]
    features = np.stack([r['routing'] for r in records])
    out = {'routing_chance': chance_rate(labels), 'routing_dims': int(features.shape[1]),
           'routing_groups': len(set(groups))}
    if len(set(labels)) < 2 or len(set(groups)) < 2:
        notes.append('routing_accuracy, routing_auc, intervention_psnr_drop: need two labels and two clean images '
                     'or more (a clean image leaves with all its degraded versions)')
        out.update(routing_accuracy=None, routing_auc=None)
        return out, None
    out['routing_accuracy'], names, confusion = nearest_centroid_accuracy(features, labels, groups)
    out['routing_accuracy_over_chance'] = out['routing_accuracy'] / out['routing_chance']
    stats = np.stack([r['input_stats'] for r in records])
    out['routing_accuracy_input'] = nearest_centroid_accuracy(stats, labels, groups)[0]
    out['routing_confusion'] = {'labels': names, 'counts': confusion}
    known = [i for i, s in enumerate(samples) if s.components is not None]
    out['routing_auc'] = {c: presence_auc(features[known], [c in samples[i].components for i in known],
                                          [groups[i] for i in known]) for c in COMPONENTS}
    centroids, counts = held_out_centroids(features, [names.index(v) for v in labels], len(names), groups)
    return out, (names, centroids, counts)


def routing_per_label(records, probe, notes):
    """The mean expert mix (labels x experts) and the mean prior gates (labels x gates) per label.

    Per image, ``alpha`` and ``gamma`` are averaged over every EConv call of the forward pass (each ``alpha`` sums
    to 1, so each row of ``experts`` does); then over the images of each label. ``expert_spread`` and
    ``gate_spread``: the largest difference between two labels in one column (0: every label routes alike).
    """
    if 'routing' not in records[0]:
        return {'routing_per_label': None}
    means = probe.mean_routing(np.stack([r['routing'] for r in records]))
    if means is None:
        notes.append('routing_per_label: the EConvs differ in their number of experts or gates')
        return {'routing_per_label': None}
    alpha, gamma = means
    labels = list(dict.fromkeys(r['label'] for r in records))
    rows = [[i for i, r in enumerate(records) if r['label'] == label] for label in labels]
    experts = np.stack([alpha[i].mean(0) for i in rows])
    gates = np.stack([gamma[i].mean(0) for i in rows]) if gamma.shape[1] else None
    names = list(PRIOR_NAMES) if gates is not None and gates.shape[1] == len(PRIOR_NAMES) else \
        [f'prior_{k + 1}' for k in range(gamma.shape[1])]
    return {'routing_per_label': {
        'labels': labels, 'images': [len(i) for i in rows], 'experts': experts.tolist(),
        'gates': None if gates is None else gates.tolist(), 'gate_names': names,
        'expert_spread': float(np.ptp(experts, 0).max()),
        'gate_spread': None if gates is None else float(np.ptp(gates, 0).max())}}


def active_set_summary(records, kind, notes):
    """Active-set AUCs of ``1 - Delta`` (rain, snow: overall, per stage, the input's), image counts, correlations."""
    with_set = [r['active_set'] for r in records if 'active_set' in r]
    if not with_set:
        notes.append('active_set_auc, active_set_correlation: ' + (
            'a labelled set has no synthesiser maps' if kind == 'labelled' else 'the network returns no Delta'))
        return {'active_set_auc': None, 'active_set_correlation': None}
    out = {'active_set_score': '1 - Delta', 'active_set_threshold': dict(ACTIVE_SET_THRESHOLD),
           'active_set_auc': {}, 'active_set_auc_per_stage': {}, 'active_set_auc_input': {}, 'active_set_images': {},
           'active_set_correlation': {}}
    for key in ('rain', 'snow'):
        scored = [a for a in with_set if a.get(f'auc_{key}') is not None]
        out['active_set_auc'][key] = mean_or_none(a[f'auc_{key}'] for a in scored)
        out['active_set_images'][key] = len(scored)
        out['active_set_auc_per_stage'][key] = [mean_or_none(s) for s in
                                                zip(*(a[f'auc_{key}_per_stage'] for a in scored))] if scored else None
        out['active_set_auc_input'][key] = mean_or_none(a[f'auc_{key}_input'] for a in scored)
    for key in ('transmission', 'illumination'):
        out['active_set_correlation'][key] = mean_or_none(a.get(f'corr_{key}') for a in with_set)
    return out


def map_error_summary(records, notes):
    """Mean absolute error of the final physical estimates (and per stage) over the images where each applies."""
    with_maps = [r['map_error'] for r in records if 'map_error' in r]
    if not with_maps:
        notes.append('map_error: the network returns no physical maps (aux["maps"]) or the images have no '
                     'synthesiser maps')
        return {'map_error': None}
    per_stage = {}
    for key in MAP_KEYS:
        rows = [m[key] for m in with_maps if key in m]
        if rows:
            per_stage[key] = [mean_or_none(col) for col in zip(*rows)]
    return {'map_error': {k: v[-1] for k, v in per_stage.items()}, 'map_error_per_stage': per_stage}


def presence_summary(records, samples, notes):
    """Accuracy of the network's presence decisions per component, and the share of images with all four right."""
    pairs = [(r['presence'], s.components) for r, s in zip(records, samples)
             if 'presence' in r and s.components is not None]
    if not pairs:
        notes.append('presence_accuracy: the network recognises no degradations (no aux["presence_logits"]) or the '
                     'images have no known degradations')
        return {'presence_accuracy': None, 'presence_exact': None}
    right = np.array([[said == (c in truth) for said, c in zip(decided, COMPONENTS)] for decided, truth in pairs])
    return {'presence_accuracy': dict(zip(COMPONENTS, right.mean(0).tolist())),
            'presence_exact': float(right.all(1).mean())}


def _calibration_of(rows):
    """``{part: calibration}`` of ``[(probabilities (4), components)]`` (:func:`calibration`)."""
    probs = np.array([p for p, _ in rows], np.float64).reshape(len(rows), len(COMPONENTS))
    return {c: calibration(probs[:, j], [c in truth for _, truth in rows]) for j, c in enumerate(COMPONENTS)}


def _renderer_groups(samples):
    """``{group: (component or None, [sample indices])}`` in component order, then first seen."""
    groups = {}
    for i, sample in enumerate(samples):
        for name, part in sample.renderer_groups:
            groups.setdefault(name, (part, []))[1].append(i)
    order = {c: k for k, c in enumerate(COMPONENTS)}
    return dict(sorted(groups.items(), key=lambda kv: order.get(kv[1][0], len(order))))


def renderer_summary(records, samples, notes):
    """The recogniser's calibration overall and, with the harm rate, per renderer.

    The recogniser's probability of each part is ``sigmoid(logit)`` (the head's soft gate); it counts as present
    above 0.5 for the accuracy. A sample counts in the group of the renderer of each
    component it carries (a ``low_haze`` image made by ``retinex`` and ``fog`` counts in both); a stored pair, whose
    renderers are unknown, in one group named after its data.

    Returns:
        dict: ``presence_calibration`` ``{part: {accuracy, ece, images}}`` (None without a recogniser or known
        degradations) and ``per_renderer`` ``{group: {component, images, input_psnr, final_psnr, harm_rate,
        presence_calibration}}``.
    """
    known = [i for i, (r, s) in enumerate(zip(records, samples))
             if 'presence_probability' in r and s.components is not None]
    if not known:
        notes.append('presence_calibration: the network has no recogniser (no aux["presence_logits"]) or the images '
                     'have no known degradations')
    rows = {i: (records[i]['presence_probability'], samples[i].components) for i in known}
    per_renderer = {}
    for name, (part, members) in _renderer_groups(samples).items():
        group = [records[i] for i in members]
        calibrated = [rows[i] for i in members if i in rows]
        per_renderer[name] = {'component': part, 'images': len(group),
                              'input_psnr': mean_or_none(r['input_psnr'] for r in group),
                              'final_psnr': mean_or_none(r['stage_psnr'][-1] for r in group),
                              'harm_rate': _harm_rate(group),
                              'presence_calibration': _calibration_of(calibrated) if calibrated else None}
    return {'presence_calibration': _calibration_of(list(rows.values())) if rows else None,
            'per_renderer': per_renderer}


def examples(samples, records):
    """One rain and one snow image with the true map and ``1 - Delta`` at the network's resolution (figure)."""
    found = {}
    for sample, record in zip(samples, records):
        for key in ('rain', 'snow'):
            if key in found or 'delta' not in record or key not in (sample.maps or {}):
                continue
            rows, cols = record['delta'].shape
            found[key] = {'name': sample.name, 'input': sample.lq,
                          'truth': block_mean(sample.maps[key], record['scale'], rows, cols),
                          'score': 1 - record['delta'], 'auc': record['active_set'].get(f'auc_{key}')}
    return found
