"""Per-image measurements: one forward pass (with InterIR's ``aux`` when offered) and everything that needs no
other image: stage PSNRs, residuals, the routing vector, the active set against the synthesiser's rain and snow,
the physical maps' errors, and the recogniser's decisions and probabilities.

**Active set.** ``Delta`` is the generalised derivative of the prior's prox (1: the prox passes the feature
through, 0: it clamps it), and the ISN step applies the prior's curvature where ``1 - Delta`` is large. Rain
streaks and snow flakes are what the prior must reject, so the score under test is ``1 - Delta`` (fixed, never
chosen per run). It is compared at the network's resolution: the true map is area-averaged over the ``s x s``
blocks of the feature grid (whole blocks only), and a block is positive where that mean is at least
:data:`ACTIVE_SET_THRESHOLD`.
"""
import numpy as np
import torch

from interir_plugin.tools.audit.statistics import auc, block_mean, correlation, psnr_float
from interir_plugin.tools.forward import image_tensor, psnr, run_network
from interir_plugin.utils.padding import pad_for_network

#: A feature-grid block is a rain (snow) pixel where the block mean of the synthesiser's rain layer (snow mask) is
#: at least this: on average the block gains 5 % of full scale (about 13 8-bit levels) from streaks, or 5 % of its
#: light comes from flakes. Fixed before any run.
ACTIVE_SET_THRESHOLD = {'rain': 0.05, 'snow': 0.05}
#: Estimated maps scored by ``map_error`` and the degradations that make an image count for each.
MAP_KEYS = {'gain': ('low_light',), 'transmission': ('haze',), 'airlight': ('haze',),
            'layer': ('low_light', 'rain', 'snow', 'noise')}


def _true_grid(maps, key, scale, rows, cols):
    return block_mean(maps[key], scale, rows, cols) if maps is not None and key in maps else None


def _active_set(sample, deltas, scale, rows, cols):
    """Active-set AUCs (rain, snow; per step and for the step mean) and Delta correlations of one image."""
    result = {}
    mean_delta = np.mean(deltas, 0)
    for key in ('rain', 'snow'):
        truth = _true_grid(sample.maps, key, scale, rows, cols)
        if truth is None:
            continue
        positive = truth >= ACTIVE_SET_THRESHOLD[key]
        result[f'auc_{key}'] = auc(1 - mean_delta, positive)
        result[f'auc_{key}_per_stage'] = [auc(1 - d, positive) for d in deltas]
        result[f'auc_{key}_input'] = auc(block_mean(sample.lq.max(2), scale, rows, cols), positive)
    for key in ('transmission', 'illumination'):
        truth = _true_grid(sample.maps, key, scale, rows, cols)
        if truth is not None:
            result[f'corr_{key}'] = correlation(mean_delta, truth)
    return result


def airlight_per_channel(truth):
    """The synthesiser's airlight as per-channel values: a number (one value), C values, or a map (fog, glare: its
    per-channel mean)."""
    truth = np.asarray(truth, np.float64)
    if truth.ndim == 3:
        return truth.reshape(-1, truth.shape[-1]).mean(0)
    return np.atleast_1d(truth.mean()) if truth.ndim == 2 else truth.reshape(-1)


def _airlight_error(estimate, truth):
    """MAE of the network's per-channel airlight against the synthesiser's (:func:`airlight_per_channel`)."""
    return float(np.abs(estimate.flatten().numpy() - airlight_per_channel(truth)).mean())


def _map_error(key, estimate, truth, size):
    """MAE of one estimated map (``C x H' x W'`` tensor, cropped to ``size``) against the synthesiser's."""
    if key == 'airlight':
        return _airlight_error(estimate, truth)
    est = estimate[..., :size[0], :size[1]].numpy()
    truth = truth.transpose(2, 0, 1) if truth.ndim == 3 else truth[None]
    if est.shape[0] != truth.shape[0] and est.shape[0] == 1:
        truth = truth.mean(0, keepdims=True)
    return float(np.abs(est - truth).mean())


def _map_errors(sample, aux_maps, size):
    """Mean absolute error of each estimated map (per stage entry) against the synthesiser's, where it applies."""
    errors = {}
    for key, needs in MAP_KEYS.items():
        if sample.maps is None or key not in sample.maps or not set(needs) & set(sample.degradations):
            continue
        per_stage = []
        for entry in aux_maps:
            est = (entry or {}).get(key)
            per_stage.append(None if est is None else
                             _map_error(key, est[0].detach().float().cpu(), sample.maps[key], size))
        if any(v is not None for v in per_stage):
            errors[key] = per_stage
    return errors


def _delta_record(net, x, sample, aux):
    """``{active_set, delta, scale}`` of one image: the active-set figures and the step-mean ``Delta`` on the
    feature grid (whole blocks), or ``{}`` when there is no Delta, no maps or no whole block."""
    if 'delta' not in aux or sample.maps is None:
        return {}
    padded_h, padded_w = pad_for_network(x, net)[0].shape[-2:]
    deltas = [d[0].float().mean(0).cpu().numpy() for d in aux['delta']]
    scale = padded_h // deltas[0].shape[0]
    if scale * deltas[0].shape[0] != padded_h or scale * deltas[0].shape[1] != padded_w:
        return {}
    rows, cols = x.shape[-2] // scale, x.shape[-1] // scale
    if not rows or not cols:
        return {}
    deltas = [d[:rows, :cols] for d in deltas]
    return {'active_set': _active_set(sample, deltas, scale, rows, cols), 'delta': np.mean(deltas, 0),
            'scale': scale}


def presence_of(aux):
    """The recogniser's probabilities ``sigmoid(logit)`` (4 floats) and the gates its head used (4 bools, or None)
    for image 0 of ``aux``; None without a recogniser."""
    logits = (aux or {}).get('presence_logits')
    if logits is None:
        return None
    gates = (((aux.get('maps') or [None])[-1]) or {}).get('presence')
    return (torch.sigmoid(logits[0].float()).cpu().tolist(),
            None if gates is None else [bool(v) for v in (gates[0] > 0.5).cpu()])


def _presence_record(aux):
    """The recogniser's decisions (the gates its head used) and its probabilities, or ``{}``."""
    presence = presence_of(aux)
    if presence is None:
        return {}
    probability, gates = presence
    return {'presence_probability': probability, **({} if gates is None else {'presence': gates})}


def measure(net, sample, probe, device):
    """Run ``net`` on one sample (with aux when offered) and measure everything that needs no other image.

    Args:
        net (nn.Module): Bare network, eval mode.
        sample (Sample): The image.
        probe (RoutingProbe): Active probe of ``net`` (recording mode).
        device (torch.device): Where ``net`` runs.

    Returns:
        dict: ``stage_psnr``, ``input_psnr``, and where available ``residual``, ``routing`` (vector),
        ``active_set`` (see :func:`_active_set`), ``map_error``, ``presence`` (decisions), ``presence_probability``,
        ``delta`` (step-mean map, for the figure).
    """
    x = image_tensor(sample.lq)[None].to(device)
    gt = image_tensor(sample.gt)
    probe.reset()
    outputs, aux = run_network(net, x)
    record = {'name': sample.name, 'label': sample.label, 'input_psnr': psnr(x[0].cpu(), gt),
              'stage_psnr': [psnr(o[0, :3].cpu(), gt) for o in outputs],
              'final_psnr_float': psnr_float(outputs[-1][0, :3].cpu(), gt),
              'input_stats': np.concatenate([sample.lq.mean((0, 1)), sample.lq.std((0, 1))])}
    if sample.renderers is not None:
        record['renderers'] = dict(sample.renderers)
    if probe.econvs:
        record['routing'] = probe.vectors()[0]
    aux = aux or {}
    if 'residual' in aux:
        record['residual'] = [float(r[0]) for r in aux['residual']]
    record.update(_delta_record(net, x, sample, aux))
    record.update(_presence_record(aux))
    if aux.get('maps') and sample.maps is not None:
        errors = _map_errors(sample, aux['maps'], x.shape[-2:])
        if errors:
            record['map_error'] = errors
    return record
