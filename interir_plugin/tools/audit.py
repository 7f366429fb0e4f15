"""``interir audit``: numbers that test what the unfolding network's interpretable quantities claim.

The audit runs a network (from an option file) on degraded images with known answers and writes
``audit.json``, ``audit.md`` and ``audit.png``. Images come from ``data``:

- a folder of clean images: each is centre-cropped to ``max_side`` and synthesised into every category
  (:func:`interir_plugin.data.degradations.synthesize` with ``seed``; image ``i`` and category ``c`` use index
  ``i * 11 + position of c in CDD11_CATEGORIES``, so a subset of categories gives the same pairs), together with
  the synthesiser's physical maps;
- a CDD-11-layout folder (``clear/`` + category folders) or a protocol (name in ``datasets_meta/`` or file;
  its ``test`` split, disk only): read as it is. Paired images have no maps, so the map-based figures
  (active-set AUC and correlations, map errors) are left out; a protocol's synthesis sources are synthesised
  as above, with maps.

Metrics (``audit.json`` keys; every mean is over images unless said otherwise):

- ``stage_psnr``: mean PSNR (8-bit, as BasicSR's validation) of each stage output, first -> final;
  ``stage_psnr_rises``: share of images whose final output beats their first.
- ``residual``: mean data-fidelity residual ``||P x Q - z||`` after each step (InterIR's ``aux['residual']``);
  ``residual_falls``: share of images whose final residual is below their first.
- ``routing_accuracy``: leave-one-image-out nearest-centroid accuracy of the label from the *routing vector* (the
  ``alpha`` and ``gamma`` of every EConv call of the forward pass, concatenated, raw Euclidean distance). The image
  left out is a *clean* image with all its degraded versions (``Sample.group``): the label centroids come from the
  other scenes only. (Leaving out one degraded version while its siblings stay biases the score whenever the scene
  dominates the routing, as in an untrained network: for a random InterIR-S that gave a rain AUC of 0.00.)
  ``routing_chance``: the share of the most frequent label (what always guessing it scores; ``1/K`` for ``K``
  balanced labels). ``routing_auc``: per component (low, haze, rain, snow) present in some images and absent
  from others, the AUC of the held-out score ``|r - c_absent|^2 - |r - c_present|^2``.
- ``active_set_auc``: ``{rain, snow}``, per image with that component, the AUC of ``1 - Delta`` (channel mean
  and mean over steps) as a detector of the blocks where the synthesiser put rain (snow), then the mean over
  images; ``active_set_auc_per_stage`` the same per step. The comparison is at the network's resolution: the
  true map is area-averaged over the ``s x s`` blocks of the feature grid (``s`` = input size / ``Delta`` size,
  only whole blocks), and a block is positive where that mean is at least :data:`ACTIVE_SET_THRESHOLD`.
  **Sign, fixed by the algorithm:** ``Delta`` is the generalised derivative of the prior's prox (1: the prox
  passes the feature through, 0: it clamps / suppresses it), and the ISN step applies the prior's curvature
  ``EB_e(EB_d(G) (1 - Delta))`` where ``1 - Delta`` is large. Rain streaks and snow flakes are what the prior
  must reject, so the claim under test is that they sit in the *clamped* set: the score is ``1 - Delta``
  (AUC > 0.5 supports it; the AUC of ``Delta`` itself is one minus this). ``active_set_correlation``: Pearson
  correlation, per image, of ``Delta`` (channel and step mean) with the block means of the haze transmission
  ``t`` (images with haze) and of the illumination ``L`` (images with low light), then the mean.
- ``intervention_psnr_drop``: every EConv's routing is replaced by the held-out centroid routing of each label
  (centroids over the other clean images, as above, so that the own label's centroid does not hold the image's
  own routing; one batched forward per image); per image, the final output's PSNR (float, unrounded: the
  differences may be below one 8-bit level) with its own label's centroid minus the mean PSNR with the other
  labels' centroids; the mean over images. Equivalently, the PSNR change under another label's routing minus the
  change under its own; positive when routing matters. ``intervention_psnr_change`` gives both changes against
  the unaltered run.
- References that need no network, so that a figure can be read against what the input alone gives:
  ``routing_accuracy_input``, the same held-out nearest-centroid accuracy on six input statistics (per-channel
  mean and standard deviation of the degraded image), and ``active_set_auc_input``, the same AUC for the block
  mean of the degraded image's max channel (bright streaks and flakes are visible in the input itself).
- ``map_error``: when the network returns physical estimates (``aux['maps']``: a dict per stage output with
  ``gain``, ``transmission``, ``airlight``, ``layer``), the mean absolute error of the final entry against the
  synthesiser's maps: ``gain`` on images with low light, ``transmission`` and ``airlight`` on images with haze,
  ``layer`` on images with low light (its sensor noise), rain or snow; ``map_error_per_stage`` per entry.
  Absent keys are skipped.
- ``presence_accuracy``: when the network recognises its degradations (``aux['presence_logits']``, InterIR's
  presence gates), the accuracy of its decisions (the gates its head used) per component (low, haze, rain, snow)
  against the synthesiser's or the label's, and ``presence_exact``: the share of images with all four right.

Keys that do not apply (DGUNet has no ``aux`` and no EConv; a labelled set has no maps) are ``null`` and
``notes`` says why, so every network sits in one table. :data:`TARGETS` are the acceptance targets of issue 14
for a trained InterIR-S; ``audit.md`` shows each figure beside its target.
"""
import json
import math
import os
import os.path as osp

import numpy as np
import torch

from interir_plugin.archs.econv import EConv
from interir_plugin.data.degradations import CATEGORY_PARTS, CDD11_CATEGORIES, category_spec, synthesize
from interir_plugin.data.sources import Source, decode_depth, expand_cdd11, list_folder, load_protocol
from interir_plugin.tools.explain import psnr, round_floats, run_network
from interir_plugin.tools.imageio import read_image
from interir_plugin.tools.loading import build_restorer, input_channels, resolve_device
from interir_plugin.tools.options import load_option_file
from interir_plugin.utils.metrics import HARM_MARGIN_DB, harmed
from interir_plugin.utils.padding import crop_to, pad_for_network
from interir_plugin.utils.presence import PRESENCE_PARTS
from interir_plugin.utils.tables import markdown_table

#: Components whose presence the routing AUCs and the active-set metrics test (CDD-11 category parts).
COMPONENTS = PRESENCE_PARTS  # the same four parts InterIR's presence gates know
#: A feature-grid block is a rain (snow) pixel where the block mean of the synthesiser's rain layer (snow mask) is
#: at least this: on average the block gains 5 % of full scale (about 13 8-bit levels) from streaks, or 5 % of its
#: light comes from flakes. Fixed before any run.
ACTIVE_SET_THRESHOLD = {'rain': 0.05, 'snow': 0.05}
#: Estimated maps scored by ``map_error`` and the degradations that make an image count for each.
MAP_KEYS = {'gain': ('low_light',), 'transmission': ('haze',), 'airlight': ('haze',),
            'layer': ('low_light', 'rain', 'snow', 'noise')}
#: Acceptance targets of issue 14 for a trained InterIR-S: (audit.json key, comparison, threshold, description).
TARGETS = (
    ('stage_psnr_gain', '>=', 0.5, 'final - first stage PSNR (dB)'),
    ('residual_falls', '>=', 0.8, 'share of images whose residual falls'),
    ('routing_accuracy_over_chance', '>=', 3.0, 'routing accuracy / chance'),
    ('active_set_auc.rain', '>=', 0.75, 'active-set AUC, rain'),
    ('active_set_auc.snow', '>=', 0.75, 'active-set AUC, snow'),
    ('intervention_psnr_drop', '>', 0.0, 'intervention PSNR drop (dB)'),
)
#: Default centre-crop side (the MiniCDD test tiles are 256 x 256).
DEFAULT_MAX_SIDE = 256


# --------------------------------------------------------------------------------------------------- metrics
def auc(scores, positives):
    """Area under the ROC curve of ``scores`` as a detector of ``positives`` (Mann-Whitney, ties count half).

    Args:
        scores (array-like): Scores, any shape.
        positives (array-like): Booleans of the same shape.

    Returns:
        float | None: The AUC, or None when there are no positives or no negatives.
    """
    s = np.asarray(scores, np.float64).ravel()
    p = np.asarray(positives, bool).ravel()
    if s.shape != p.shape:
        raise ValueError(f'auc: {s.size} scores but {p.size} labels')
    if not np.isfinite(s).all():
        raise ValueError('auc: the scores contain NaN or infinity')
    n1 = int(p.sum())
    n0 = p.size - n1
    if n1 == 0 or n0 == 0:
        return None
    order = np.argsort(s, kind='mergesort')
    _, first, counts = np.unique(s[order], return_index=True, return_counts=True)
    ranks = np.empty(s.size)
    ranks[order] = np.repeat(first + (counts + 1) / 2.0, counts)  # average 1-based rank of each tie group
    return float((ranks[p].sum() - n1 * (n1 + 1) / 2.0) / (n1 * n0))


def held_out_centroids(features, classes, num_classes, groups=None):
    """Per row, the centroid of each class over the rows of the *other* groups.

    Args:
        features (array-like): ``N x D``.
        classes (array-like): ``N`` class indices in ``[0, num_classes)``.
        num_classes (int): Number of classes.
        groups (array-like | None): ``N`` group keys; a row's own group is held out with it. None: every row is
            its own group (leave-one-out). Default: None.

    Returns:
        tuple: ``(N x num_classes x D centroids, N x num_classes counts)``; a centroid over no row is zero and its
        count 0.
    """
    x = np.asarray(features, np.float64)
    classes = np.asarray(classes, int)
    folds = np.arange(len(x)) if groups is None else np.unique(np.asarray(groups, dtype=str), return_inverse=True)[1]
    sums = np.zeros((folds.max() + 1, num_classes, x.shape[1]))
    counts = np.zeros((folds.max() + 1, num_classes))
    np.add.at(sums, (folds, classes), x)
    np.add.at(counts, (folds, classes), 1)
    rest_sums, rest_counts = sums.sum(0)[None] - sums, counts.sum(0)[None] - counts  # everything but the fold
    return (rest_sums / np.maximum(rest_counts, 1)[..., None])[folds], rest_counts[folds]


def _held_out_distances(features, classes, num_classes, groups):
    """Squared distance of each row to each held-out class centroid (inf where the centroid is over no row)."""
    cent, counts = held_out_centroids(features, classes, num_classes, groups)
    dist = ((np.asarray(features, np.float64)[:, None] - cent) ** 2).sum(-1)
    dist[counts == 0] = np.inf
    return dist


def nearest_centroid_accuracy(features, labels, groups=None):
    """Held-out nearest-centroid classification of ``labels`` from ``features``.

    Args:
        features (array-like): ``N x D``.
        labels (sequence): ``N`` labels (any hashable).
        groups (sequence | None): ``N`` group keys held out together (the audit: the clean image, so that all
            degraded versions of a scene leave together); None: leave one row out. Default: None.

    Returns:
        tuple: ``(accuracy, label names in first-seen order, confusion counts (true x predicted) as lists)``.
    """
    names = list(dict.fromkeys(labels))
    y = np.array([names.index(v) for v in labels])
    pred = _held_out_distances(features, y, len(names), groups).argmin(1)
    confusion = np.zeros((len(names), len(names)), int)
    np.add.at(confusion, (y, pred), 1)
    return float((pred == y).mean()), names, confusion.tolist()


def chance_rate(labels):
    """Accuracy of always guessing the most frequent label."""
    _, counts = np.unique(np.asarray(labels, dtype=object).astype(str), return_counts=True)
    return float(counts.max() / counts.sum())


def presence_auc(features, present, groups=None):
    """AUC of the held-out score ``|x - c_absent|^2 - |x - c_present|^2`` for a binary ``present``.

    Rows whose held-out centroids are not both defined are left out; None when fewer than two rows of each side
    remain.
    """
    present = np.asarray(present, bool)
    dist = _held_out_distances(features, present.astype(int), 2, groups)
    ok = np.isfinite(dist).all(1)
    if (present & ok).sum() < 2 or (~present & ok).sum() < 2:
        return None
    return auc(dist[ok, 0] - dist[ok, 1], present[ok])


def block_mean(m, scale, rows, cols):
    """Mean of ``m`` (``H x W``) over the ``scale x scale`` blocks of its top-left ``rows x cols`` block grid."""
    m = np.asarray(m, np.float64)[:rows * scale, :cols * scale]
    return m.reshape(rows, scale, cols, scale).mean((1, 3))


def correlation(a, b):
    """Pearson correlation of two equally shaped arrays; None when either is constant."""
    a, b = np.asarray(a, np.float64).ravel(), np.asarray(b, np.float64).ravel()
    a, b = a - a.mean(), b - b.mean()
    denom = math.sqrt(float((a * a).sum() * (b * b).sum()))
    return float((a * b).sum() / denom) if denom > 1e-12 else None


def psnr_float(a, b):
    """PSNR (dB) of two tensors in [0, 1] (``a`` clamped), without 8-bit rounding; capped at 100 dB."""
    mse = float(((a.float().clamp(0, 1) - b.float()) ** 2).mean())
    return 10 * math.log10(1.0 / max(mse, 1e-10))


def _mean(values):
    values = [v for v in values if v is not None]
    return float(np.mean(values)) if values else None


# ------------------------------------------------------------------------------------------------------- data
class Sample:
    """One degraded image with its clean target and what is known about it.

    Args:
        name (str): Name for the report (``<image>/<label>``).
        label (str): Degradation label.
        lq (ndarray): ``H x W x 3`` float32 RGB degraded image in [0, 1].
        gt (ndarray): Clean image, same shape.
        degradations (tuple[str] | None): Degradation names (``low_light``, ``rain``, ...) when known.
        maps (dict | None): Synthesiser maps (``return_maps``), None for a stored pair. Default: None.
        group (str | None): The clean image it was made from (its file); the routing metrics hold out every
            sample of a group together. None: the sample is its own group. Default: None.
    """

    def __init__(self, name, label, lq, gt, degradations, maps=None, group=None):
        self.name, self.label, self.lq, self.gt, self.degradations, self.maps = name, label, lq, gt, degradations, maps
        self.group = name if group is None else group

    @property
    def components(self):
        """The :data:`COMPONENTS` present (a frozenset), or None when the degradations are unknown."""
        if self.degradations is None:
            return None
        return frozenset(c for c in COMPONENTS if CATEGORY_PARTS[c] in self.degradations)


def _centre_crop(img, max_side):
    if not max_side:
        return img
    h, w = img.shape[:2]
    top, left = max(0, (h - max_side) // 2), max(0, (w - max_side) // 2)
    return np.ascontiguousarray(img[top:top + max_side, left:left + max_side])


def _read_rgb(path, max_side):
    return _centre_crop(read_image(path).rgb, max_side)


def _label_degradations(label, spec):
    if spec is not None:
        return tuple(name for name, _ in spec)
    if label in CDD11_CATEGORIES:
        return tuple(CATEGORY_PARTS[p] for p in label.split('_'))
    return None


def _clean_folder_samples(folder, categories, seed, max_images, max_side):
    categories = list(categories or CDD11_CATEGORIES)
    for c in categories:
        category_spec(c)  # names the unknown category
    if len(set(categories)) != len(categories):
        raise ValueError(f'categories {categories} name a category twice')
    paths = list_folder(folder, 'disk')
    keys = sorted(paths)[:max_images] if max_images else sorted(paths)
    samples = []
    for i, key in enumerate(keys):
        clean = _read_rgb(paths[key], max_side)
        for c in categories:
            lq, _, maps = synthesize(clean, c, seed, i * len(CDD11_CATEGORIES) + CDD11_CATEGORIES.index(c),
                                     return_maps=True)
            samples.append(Sample(f'{key}/{c}', c, lq, clean, _label_degradations(c, None), maps, paths[key]))
    return samples


def _source_samples(source, seed, max_images, max_side, first_index):
    """Samples of one :class:`~interir_plugin.data.sources.Source` (disk): pairs as stored, synthesis with maps."""
    if source.kind != 'disk':
        raise ValueError(f'audit reads disk data only; the source of label {source.label!r} is an LMDB '
                         f'({source.roots["gt"]})')
    count = min(len(source), max_images) if max_images else len(source)
    samples = []
    for j in range(count):
        gt_path = source.gt_paths[j]
        gt = _read_rgb(gt_path, max_side)
        name = f'{osp.splitext(osp.basename(gt_path))[0]}/{source.label}'
        if source.synthesis is None:
            lq_path = source.lq_paths[j]
            lq = _read_rgb(lq_path, max_side)
            if lq.shape != gt.shape:
                raise ValueError(f'size mismatch: {lq_path} is {lq.shape[:2]} but {gt_path} is {gt.shape[:2]} '
                                 f'(after the centre crop to {max_side})')
            samples.append(Sample(name, source.label, lq, gt, _label_degradations(source.label, None),
                                  group=gt_path))
            continue
        depth = None
        if source.depth_paths is not None:
            with open(source.depth_paths[j], 'rb') as f:
                depth = _centre_crop(decode_depth(f.read(), source.depth_paths[j]), max_side)[..., 0]
        lq, _, maps = synthesize(gt, source.synthesis, seed, first_index + j, depth=depth, return_maps=True)
        samples.append(Sample(name, source.label, lq, gt, _label_degradations(source.label, source.synthesis),
                              maps, gt_path))
    return samples


def load_samples(data, categories=None, seed=0, max_images=None, max_side=DEFAULT_MAX_SIDE):
    """The audit's images (see the module docstring for the three kinds of ``data``).

    Args:
        data (str): Folder of clean images, CDD-11-layout folder (with ``clear/``), or protocol name or file.
        categories (list[str] | None): Categories to synthesise, or labels to keep of a labelled set; None: all.
            Default: None.
        seed (int): Synthesis seed. Default: 0.
        max_images (int | None): At most this many clean images (each synthesised into every category) or images
            per label of a labelled set, the first in sorted order; None: all. Default: None.
        max_side (int | None): Centre-crop images to at most this side (None: keep). Default: 256.

    Returns:
        tuple: ``(list of Sample, kind)`` with kind ``'synthesised'`` or ``'labelled'``.
    """
    if max_images is not None and (not isinstance(max_images, int) or max_images < 1):
        raise ValueError(f'max_images must be a positive int or None, got {max_images!r}')
    disk = {'type': 'disk'}
    if osp.isdir(data) and not osp.isdir(osp.join(data, 'clear')):
        return _clean_folder_samples(data, categories, seed, max_images, max_side), 'synthesised'
    if osp.isdir(data):
        labels = list(categories or [c for c in CDD11_CATEGORIES if osp.isdir(osp.join(data, c))])
        if not labels:
            raise FileNotFoundError(f'--data {data} has clear/ but no CDD-11 category folder '
                                    f'({", ".join(CDD11_CATEGORIES)})')
        entries, where = expand_cdd11({'root': data, 'categories': labels}, disk, f'--data {data}'), data
    else:
        try:
            labels, entries, cdd11 = load_protocol(data, split='test', labels=categories)
        except FileNotFoundError as err:
            raise FileNotFoundError(f'--data {data} is not a folder (clean images or CDD-11 layout) nor a protocol: '
                                    f'{err}') from err
        entries = list(entries) + (expand_cdd11(cdd11, disk, f'protocol {data} cdd11') if cdd11 else [])
        where = f'protocol {data} (test split)'
    samples, cache = [], {}
    for n, entry in enumerate(entries):
        source = Source(entry, labels, disk, f'{where} source {n} ({entry.get("label")})', cache)
        samples += _source_samples(source, seed, max_images, max_side, len(samples))
    kind = 'synthesised' if samples and all(s.maps is not None for s in samples) else 'labelled'
    return samples, kind


# -------------------------------------------------------------------------------------------------- routing
class RoutingProbe:
    """Records, or replaces, the routing ``(alpha, gamma)`` of every :class:`EConv` call of a network.

    While the probe is active (``with probe:``) every EConv instance's ``route`` is wrapped: in recording mode
    it stores what the router returns; with :meth:`set_override` it returns the given routing instead (the
    router is not run). ``econv.py`` is untouched; leaving the block restores the instances.

    Args:
        net (nn.Module): The bare network.
    """

    def __init__(self, net):
        self.econvs = [m for m in net.modules() if isinstance(m, EConv)]
        self.calls = [[] for _ in self.econvs]
        self.layout = None  # ((econv, call, M, P), ...) of the routing vector, set by the first vectors() call
        self.override = None
        self._saved = []

    def __enter__(self):
        for i, m in enumerate(self.econvs):
            self._saved.append(m.__dict__.get('route'))
            m.route = self._wrap(i, m.route)
        return self

    def __exit__(self, *exc):
        for m, saved in zip(self.econvs, self._saved):
            if saved is None:
                del m.route
            else:
                m.route = saved
        self._saved = []
        self.override = None

    def _wrap(self, i, original):
        def route(x, cond=None):
            k = len(self.calls[i])
            if self.override is not None:
                alpha, gamma = self.override[i][k]
                self.calls[i].append(None)
                return alpha.to(x.device), gamma.to(x.device)
            alpha, gamma = original(x, cond)
            self.calls[i].append((alpha.detach().float().cpu(), gamma.detach().float().cpu()))
            return alpha, gamma

        return route

    def reset(self):
        """Forget the calls of the last forward pass (call before each forward)."""
        self.calls = [[] for _ in self.econvs]

    def vectors(self):
        """Routing vectors (``B x D`` float64 array) of the last recorded forward; the layout must not change."""
        layout = tuple((i, k, a.shape[1], g.shape[1]) for i, calls in enumerate(self.calls)
                       for k, (a, g) in enumerate(calls))
        if self.layout is None:
            self.layout = layout
        elif layout != self.layout:
            raise ValueError('audit: the EConv calls of this forward pass differ from the first one; the routing '
                             'vectors cannot be compared')
        parts = [torch.cat(c, 1) for calls in self.calls for c in calls]
        return torch.cat(parts, 1).double().numpy()

    def set_override(self, vectors):
        """Replace every EConv's routing by rows of ``vectors`` (``K x D``, the layout of :meth:`vectors`)."""
        v = torch.as_tensor(np.asarray(vectors), dtype=torch.float32)
        override, start = [[] for _ in self.econvs], 0
        for i, _, m, p in self.layout:
            override[i].append((v[:, start:start + m], v[:, start + m:start + m + p]))
            start += m + p
        self.override = override
        self.reset()


# ---------------------------------------------------------------------------------------------- measurement
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


def _map_errors(sample, aux_maps, size):
    """Mean absolute error of each estimated map (per stage entry) against the synthesiser's, where it applies."""
    h, w = size
    errors = {}
    for key, needs in MAP_KEYS.items():
        if sample.maps is None or key not in sample.maps or not set(needs) & set(sample.degradations):
            continue
        per_stage = []
        for entry in aux_maps:
            est = (entry or {}).get(key)
            if est is None:
                per_stage.append(None)
                continue
            est = est[0].detach().float().cpu()
            if key == 'airlight':  # the network's is one value per channel; a renderer's may be a map (fog, glare)
                truth = np.asarray(sample.maps['airlight'], np.float32)
                truth = truth.reshape(-1, truth.shape[-1]).mean(0) if truth.ndim == 3 else truth.mean(
                    keepdims=True) if truth.ndim == 2 else truth.reshape(-1)
                per_stage.append(float(np.abs(est.flatten().numpy() - truth).mean()))
                continue
            est = est[..., :h, :w].numpy()
            truth = sample.maps[key]
            truth = truth.transpose(2, 0, 1) if truth.ndim == 3 else truth[None]
            if est.shape[0] != truth.shape[0] and est.shape[0] == 1:
                truth = truth.mean(0, keepdims=True)
            per_stage.append(float(np.abs(est - truth).mean()))
        if any(v is not None for v in per_stage):
            errors[key] = per_stage
    return errors


def measure(net, sample, probe, device):
    """Run ``net`` on one sample (with aux when offered) and measure everything that needs no other image.

    Args:
        net (nn.Module): Bare network, eval mode.
        sample (Sample): The image.
        probe (RoutingProbe): Active probe of ``net`` (recording mode).
        device (torch.device): Where ``net`` runs.

    Returns:
        dict: ``stage_psnr``, ``input_psnr``, and where available ``residual``, ``routing`` (vector),
        ``active_set`` (see :func:`_active_set`), ``map_error``, ``delta`` (step-mean map, for the figure).
    """
    x = torch.from_numpy(np.ascontiguousarray(sample.lq.transpose(2, 0, 1)))[None].to(device)
    gt = torch.from_numpy(np.ascontiguousarray(sample.gt.transpose(2, 0, 1)))
    probe.reset()
    outputs, aux = run_network(net, x)
    record = {'name': sample.name, 'label': sample.label, 'input_psnr': psnr(x[0].cpu(), gt),
              'stage_psnr': [psnr(o[0, :3].cpu(), gt) for o in outputs],
              'final_psnr_float': psnr_float(outputs[-1][0, :3].cpu(), gt)}
    record['input_stats'] = np.concatenate([sample.lq.mean((0, 1)), sample.lq.std((0, 1))])
    if probe.econvs:
        record['routing'] = probe.vectors()[0]
    aux = aux or {}
    if 'residual' in aux:
        record['residual'] = [float(r[0]) for r in aux['residual']]
    if 'delta' in aux and sample.maps is not None:
        padded_h, padded_w = pad_for_network(x, net)[0].shape[-2:]
        deltas = [d[0].float().mean(0).cpu().numpy() for d in aux['delta']]
        scale = padded_h // deltas[0].shape[0]
        if scale * deltas[0].shape[0] == padded_h and scale * deltas[0].shape[1] == padded_w:
            rows, cols = x.shape[-2] // scale, x.shape[-1] // scale
            deltas = [d[:rows, :cols] for d in deltas]
            if rows and cols:
                record['active_set'] = _active_set(sample, deltas, scale, rows, cols)
                record['delta'] = np.mean(deltas, 0)
                record['scale'] = scale
    if aux.get('presence_logits') is not None:  # the gates the head used: the recogniser's decision
        record['presence'] = [bool(v) for v in (aux['maps'][-1]['presence'][0] > 0.5).cpu()]
    if aux.get('maps') and sample.maps is not None:
        errors = _map_errors(sample, aux['maps'], x.shape[-2:])
        if errors:
            record['map_error'] = errors
    return record


def intervene(net, sample, probe, centroids, device):
    """Final-output PSNRs (float) of ``sample`` with every EConv's routing set to each row of ``centroids``."""
    x = torch.from_numpy(np.ascontiguousarray(sample.lq.transpose(2, 0, 1)))[None].to(device)
    gt = torch.from_numpy(np.ascontiguousarray(sample.gt.transpose(2, 0, 1)))
    padded, size = pad_for_network(x.expand(len(centroids), -1, -1, -1).contiguous(), net)
    probe.set_override(centroids)
    try:
        with torch.no_grad():
            out = net(padded)
    finally:
        probe.override = None
    final = crop_to(out[-1] if isinstance(out, (list, tuple)) else out, size)
    return [psnr_float(final[k, :3].cpu(), gt) for k in range(len(centroids))]


# -------------------------------------------------------------------------------------------------- summary
def _routing_summary(records, samples, notes):
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
    stats = np.stack([r['input_stats'] for r in records])
    out['routing_accuracy_input'] = nearest_centroid_accuracy(stats, labels, groups)[0]
    out['routing_confusion'] = {'labels': names, 'counts': confusion}
    known = [i for i, s in enumerate(samples) if s.components is not None]
    out['routing_auc'] = {c: presence_auc(features[known], [c in samples[i].components for i in known],
                                          [groups[i] for i in known]) for c in COMPONENTS}
    centroids, counts = held_out_centroids(features, [names.index(v) for v in labels], len(names), groups)
    return out, (names, centroids, counts)


def _stage_summary(records, notes):
    out = {'stages': len(records[0]['stage_psnr']),
           'input_psnr': _mean(r['input_psnr'] for r in records),
           'stage_psnr': np.mean([r['stage_psnr'] for r in records], 0).tolist(),
           'stage_psnr_rises': float(np.mean([r['stage_psnr'][-1] > r['stage_psnr'][0] for r in records])),
           'harm_rate': float(np.mean([harmed(r['stage_psnr'][-1], r['input_psnr']) for r in records]))}
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


def _active_set_summary(records, kind, notes):
    with_set = [r['active_set'] for r in records if 'active_set' in r]
    if not with_set:
        notes.append('active_set_auc, active_set_correlation: ' + (
            'a labelled set has no synthesiser maps' if kind == 'labelled' else 'the network returns no Delta'))
        return {'active_set_auc': None, 'active_set_correlation': None}
    out = {'active_set_score': '1 - Delta', 'active_set_threshold': dict(ACTIVE_SET_THRESHOLD),
           'active_set_auc': {}, 'active_set_auc_per_stage': {}, 'active_set_auc_input': {}, 'active_set_images': {},
           'active_set_correlation': {}}
    for key in ('rain', 'snow'):
        values = [a[f'auc_{key}'] for a in with_set if a.get(f'auc_{key}') is not None]
        out['active_set_auc'][key] = _mean(values)
        out['active_set_images'][key] = len(values)
        stages = [a[f'auc_{key}_per_stage'] for a in with_set if a.get(f'auc_{key}') is not None]
        out['active_set_auc_per_stage'][key] = [_mean(s) for s in zip(*stages)] if stages else None
        out['active_set_auc_input'][key] = _mean(a[f'auc_{key}_input'] for a in with_set
                                                 if a.get(f'auc_{key}') is not None)
    for key in ('transmission', 'illumination'):
        out['active_set_correlation'][key] = _mean(a.get(f'corr_{key}') for a in with_set)
    return out


def _map_error_summary(records, notes):
    with_maps = [r['map_error'] for r in records if 'map_error' in r]
    if not with_maps:
        notes.append('map_error: the network returns no physical maps (aux["maps"]) or the images have no '
                     'synthesiser maps')
        return {'map_error': None}
    per_stage = {}
    for key in MAP_KEYS:
        rows = [m[key] for m in with_maps if key in m]
        if rows:
            per_stage[key] = [_mean(col) for col in zip(*rows)]
    return {'map_error': {k: v[-1] for k, v in per_stage.items()}, 'map_error_per_stage': per_stage}


def _presence_summary(records, samples, notes):
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


def _intervention_summary(net, samples, records, probe, centroids, device, log, notes):
    """Per image: PSNR under its own label's held-out centroid routing minus the mean under the other labels'."""
    if centroids is None:
        return {'intervention_psnr_drop': None}
    names, table, counts = centroids
    drops, own_change, other_change = [], [], []
    for i, (sample, record) in enumerate(zip(samples, records)):
        own_index = names.index(sample.label)
        usable = [k for k in range(len(names)) if counts[i, k] > 0]
        if own_index not in usable or len(usable) < 2:
            continue  # no held-out routing of its own label, or of no other label
        values = dict(zip(usable, intervene(net, sample, probe, table[i, usable], device)))
        own = values.pop(own_index)
        others = float(np.mean(list(values.values())))
        record['intervention'] = {'own': own, 'others': others}
        drops.append(own - others)
        own_change.append(own - record['final_psnr_float'])
        other_change.append(others - record['final_psnr_float'])
        if (i + 1) % 20 == 0:
            log(f'  intervention {i + 1}/{len(samples)}')
    if not drops:
        notes.append('intervention_psnr_drop: no image has held-out centroids of its own label and of another')
        return {'intervention_psnr_drop': None}
    return {'intervention_psnr_drop': float(np.mean(drops)), 'intervention_images': len(drops),
            'intervention_psnr_change': {'own': float(np.mean(own_change)), 'other': float(np.mean(other_change))}}


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


def audit_network(net, samples, kind, device='cpu', log=print):
    """Every audit metric of ``net`` on ``samples`` (the core of :func:`audit`, without files).

    Args:
        net (nn.Module): Bare network in eval mode, on ``device``.
        samples (list[Sample]): Images (:func:`load_samples`).
        kind (str): ``'synthesised'`` or ``'labelled'`` (for the notes).
        device (str | torch.device): Where ``net`` runs. Default: 'cpu'.
        log (callable): Progress lines. Default: print.

    Returns:
        dict: The metrics (module docstring), ``notes``, and ``per_image`` records.
    """
    if not samples:
        raise ValueError('audit: no images to audit')
    device, notes = torch.device(device), []
    with RoutingProbe(net) as probe:
        records = []
        for i, sample in enumerate(samples):
            records.append(measure(net, sample, probe, device))
            if (i + 1) % 20 == 0 or i + 1 == len(samples):
                log(f'  measured {i + 1}/{len(samples)} images')
        result = _stage_summary(records, notes)
        routing, centroids = _routing_summary(records, samples, notes)
        result.update(routing)
        if result.get('routing_accuracy') is not None and result['routing_chance']:
            result['routing_accuracy_over_chance'] = result['routing_accuracy'] / result['routing_chance']
        result.update(_active_set_summary(records, kind, notes))
        result.update(_map_error_summary(records, notes))
        result.update(_presence_summary(records, samples, notes))
        result.update(_intervention_summary(net, samples, records, probe, centroids, device, log, notes))
    result['notes'] = notes
    result['per_image'] = [{k: v for k, v in r.items() if k not in ('routing', 'delta', 'input_stats')}
                           for r in records]
    result['_examples'] = _examples(samples, records)
    return result


def _examples(samples, records):
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


# ---------------------------------------------------------------------------------------------------- report
def _fmt(value, digits=3):
    if value is None:
        return 'n/a'
    return f'{value:.{digits}f}' if isinstance(value, float) else str(value)


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
        lines.append(f'active-set AUC (1 - Delta) rain {_fmt(a.get("rain"), 2)}, snow {_fmt(a.get("snow"), 2)} '
                     f'(input brightness: rain {_fmt(ref.get("rain"), 2)}, snow {_fmt(ref.get("snow"), 2)})')
    if result.get('intervention_psnr_drop') is not None:
        lines.append(f'intervention PSNR drop {result["intervention_psnr_drop"]:+.3f} dB')
    if result.get('map_error'):
        lines.append('map error (MAE) ' + ', '.join(f'{k} {_fmt(v)}' for k, v in result['map_error'].items()))
    if result.get('presence_accuracy'):
        lines.append('presence recognised ' + ', '.join(f'{k} {_fmt(v, 2)}' for k, v in
                                                        result['presence_accuracy'].items())
                     + f' (all four right in {100 * result["presence_exact"]:.0f}% of images)')
    return '\n'.join(lines)


def _markdown_sections(result):
    """The optional sections of ``audit.md`` (routing, active set, intervention, maps, notes), as lines."""
    lines = []
    if result.get('routing_accuracy') is not None:
        lines += ['', '## Routing', '', f'Held-out nearest-centroid accuracy {result["routing_accuracy"]:.3f} over '
                  f'{result["routing_dims"]} routing values per image ({result["routing_groups"]} clean images, each '
                  f'held out with all its versions); chance {result["routing_chance"]:.3f}; the same on six input '
                  f'statistics {result["routing_accuracy_input"]:.3f}.', '']
        lines += markdown_table(['component', 'AUC (present vs absent)'],
                                [[c, _fmt(v)] for c, v in (result.get('routing_auc') or {}).items()])
    if result.get('active_set_auc'):
        lines += ['', '## Active set', '', f'Score `1 - Delta` (Delta: channel and step mean); positives: block mean '
                  f'of the true map >= {result["active_set_threshold"]}.', '']
        lines += markdown_table(
            ['map', 'AUC of 1 - Delta', 'images', 'per stage', 'input brightness AUC'],
            [[key, _fmt(value), result['active_set_images'][key],
              ', '.join(_fmt(v, 2) for v in result['active_set_auc_per_stage'].get(key) or []),
              _fmt(result['active_set_auc_input'][key])] for key, value in result['active_set_auc'].items()])
        corr = result['active_set_correlation']
        lines += ['', f'Correlation of Delta with transmission {_fmt(corr.get("transmission"))}, with illumination '
                  f'{_fmt(corr.get("illumination"))}.']
    if result.get('intervention_psnr_drop') is not None:
        change = result['intervention_psnr_change']
        lines += ['', '## Intervention', '', f'Own-label centroid routing changes the final PSNR by '
                  f'{change["own"]:+.3f} dB, other labels\' by {change["other"]:+.3f} dB: drop '
                  f'{result["intervention_psnr_drop"]:+.3f} dB ({result["intervention_images"]} images).']
    if result.get('map_error'):
        lines += ['', '## Physical maps (mean absolute error)', '']
        per_stage = result['map_error_per_stage']
        lines += markdown_table(['map', 'final', 'per stage'],
                                [[key, _fmt(value, 4), ', '.join(_fmt(v, 4) for v in per_stage[key])]
                                 for key, value in result['map_error'].items()])
    if result['notes']:
        lines += ['', '## Not measured', ''] + [f'- {n}' for n in result['notes']]
    return lines


def write_markdown(path, result):
    """``audit.md``: setup, targets, per-stage and per-label tables, then :func:`_markdown_sections`."""
    lines = [f'# Audit of {result["network"]} ({result["option_file"]})', '',
             f'Data: `{result["data"]}` ({result["data_kind"]}, {len(result["per_image"])} images, labels: '
             f'{", ".join(result["labels"])}); seed {result["seed"]}; weights: `{result["weights"]}`.', '',
             '## Headline', '']
    lines += markdown_table(['figure', 'value', 'target', 'met'],
                            [[text, _fmt(value), f'{op} {threshold}', 'n/a' if met is None else 'yes' if met else 'no']
                             for text, value, op, threshold, met in target_table(result)])
    residual = result.get('residual') or [None] * len(result['stage_psnr'])
    names = [str(k + 1) for k in range(len(result['stage_psnr']) - 1)] + ['final']
    lines += ['', '## Per stage', '']
    lines += markdown_table(['stage', 'PSNR (dB)', 'residual'],
                            [['input', f'{result["input_psnr"]:.2f}', '']] +
                            [[n, f'{p:.2f}', _fmt(r, 4)] for n, p, r in zip(names, result['stage_psnr'], residual)])
    lines += ['', '## Per label (stage PSNR, first -> final)', '']
    lines += markdown_table(['label', 'first', 'final'], [[label, f'{v[0]:.2f}', f'{v[-1]:.2f}']
                                                          for label, v in result['stage_psnr_per_label'].items()])
    with open(path, 'w', encoding='utf-8') as f:
        f.write('\n'.join(lines + _markdown_sections(result)) + '\n')


def _text_panel(ax, text):
    ax.text(0.5, 0.5, text, ha='center', va='center', fontsize=9, transform=ax.transAxes, wrap=True)
    ax.axis('off')


def _plot_stages(ax, result):
    ticks = list(range(1, result['stages'] + 1))
    for label, values in result['stage_psnr_per_label'].items():
        ax.plot(ticks, values, '-', lw=0.8, alpha=0.5, label=label)
    ax.plot(ticks, result['stage_psnr'], 'ko-', lw=2, label='mean')
    ax.axhline(result['input_psnr'], color='grey', ls='--', lw=1, label='input')
    ax.set_xticks(ticks, [str(k) for k in ticks[:-1]] + ['final'])
    ax.set_xlabel('stage')
    ax.set_ylabel('PSNR (dB)')
    ax.set_title(f'stage PSNR (rises in {100 * result["stage_psnr_rises"]:.0f}%)')
    ax.legend(fontsize=6, ncol=2)
    ax.grid(alpha=0.3)


def _plot_residual(ax, result):
    if not result.get('residual'):
        return _text_panel(ax, 'no data-fidelity residual\n(the network returns no aux)')
    ticks = list(range(1, len(result['residual']) + 1))
    for r in result['per_image']:
        ax.plot(ticks, r['residual'], '-', color='C0', lw=0.5, alpha=0.3)
    ax.plot(ticks, result['residual'], 'ko-', lw=2)
    ax.set_xticks(ticks, [str(k) for k in ticks[:-1]] + ['final'])
    ax.set_xlabel('stage')
    ax.set_title(f'||P x Q - z|| (falls in {100 * result["residual_falls"]:.0f}%)')
    ax.grid(alpha=0.3)


def _plot_confusion(ax, result):
    conf = result.get('routing_confusion')
    if not conf:
        return _text_panel(ax, 'no routing\n(no EConv, or one label)')
    counts = np.asarray(conf['counts'], float)
    ax.imshow(counts / np.maximum(counts.sum(1, keepdims=True), 1), cmap='Blues', vmin=0, vmax=1)
    ticks = range(len(conf['labels']))
    ax.set_xticks(ticks, conf['labels'], rotation=90, fontsize=6)
    ax.set_yticks(ticks, conf['labels'], fontsize=6)
    ax.set_xlabel('nearest routing centroid')
    ax.set_title(f'routing: accuracy {result["routing_accuracy"]:.2f} (chance {result["routing_chance"]:.2f})')


def _plot_aucs(ax, result):
    bars = {f'route {k}': v for k, v in (result.get('routing_auc') or {}).items() if v is not None}
    bars.update({f'1-Delta {k}': v for k, v in (result.get('active_set_auc') or {}).items() if v is not None})
    if not bars:
        return _text_panel(ax, 'no AUCs\n(no routing, no Delta or no maps)')
    ax.bar(range(len(bars)), list(bars.values()), color=['C2' if k.startswith('1-Delta') else 'C0' for k in bars])
    ax.axhline(0.5, color='grey', ls='--', lw=1)
    ax.set_xticks(range(len(bars)), list(bars), rotation=45, ha='right', fontsize=7)
    ax.set_ylim(0, 1)
    corr = result.get('active_set_correlation') or {}
    ax.set_title(f'AUCs; corr(Delta, t) {_fmt(corr.get("transmission"), 2)}, '
                 f'corr(Delta, L) {_fmt(corr.get("illumination"), 2)}', fontsize=9)


def _plot_intervention(ax, result):
    drops = [r['intervention']['own'] - r['intervention']['others'] for r in result['per_image']
             if 'intervention' in r]
    if not drops:
        return _text_panel(ax, 'no intervention\n(no EConv, or one label)')
    spread = max(drops) - min(drops)
    ax.hist(drops, bins=min(20, max(5, len(drops) // 3)), color='C1',
            range=None if spread > 1e-6 else (min(drops) - 0.05, max(drops) + 0.05))  # all equal: a visible bar
    ax.axvline(0, color='grey', ls='--', lw=1)
    ax.set_xlabel('PSNR(own centroid) - PSNR(other centroids), dB')
    ax.set_title(f'intervention: mean drop {result["intervention_psnr_drop"]:+.3f} dB')


def draw_audit_figure(path, result):
    """``audit.png``: stage PSNR, residual, routing confusion, AUCs, intervention, and active-set examples."""
    import matplotlib

    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    examples = result.get('_examples') or {}
    fig = plt.figure(figsize=(15, 9 + 3 * len(examples)))
    grid = fig.add_gridspec(2 + len(examples), 3, height_ratios=[1, 1] + [0.8] * len(examples), hspace=0.55,
                            wspace=0.3, top=0.95)
    _plot_stages(fig.add_subplot(grid[0, 0]), result)
    _plot_residual(fig.add_subplot(grid[0, 1]), result)
    _plot_confusion(fig.add_subplot(grid[0, 2]), result)
    _plot_aucs(fig.add_subplot(grid[1, 0]), result)
    _plot_intervention(fig.add_subplot(grid[1, 1]), result)
    _text_panel(fig.add_subplot(grid[1, 2]), headline(result))
    for row, (key, ex) in enumerate(examples.items(), start=2):
        panels = ((ex['input'], f'{ex["name"]}: input', None),
                  (ex['truth'], f'true {key} (block mean, threshold {ACTIVE_SET_THRESHOLD[key]})', 'magma'),
                  (ex['score'], f'1 - Delta (AUC {_fmt(ex["auc"], 2)})', 'viridis'))
        for col, (img, title, cmap) in enumerate(panels):
            ax = fig.add_subplot(grid[row, col])
            ax.imshow(np.clip(img, 0, 1) if cmap is None else img, cmap=cmap)
            ax.set_title(title, fontsize=8)
            ax.axis('off')
    fig.suptitle(f'interir audit: {result["network"]} on {result["data"]}', y=0.995)
    fig.savefig(path, dpi=80, bbox_inches='tight')
    plt.close(fig)


def audit(option_path, data, out_dir, categories=None, seed=0, device='auto', max_images=None, log=print,
          max_side=DEFAULT_MAX_SIDE):
    """Audit an option file's network and write ``audit.json``, ``audit.md`` and ``audit.png`` in ``out_dir``.

    Args:
        option_path (str): Option file; weights from ``path.pretrain_network_g`` (random, with a warning, if unset).
        data (str): Folder of clean images, CDD-11-layout folder or protocol (see :func:`load_samples`).
        out_dir (str): Output folder (created).
        categories (list[str] | None): Categories to synthesise / labels to keep; None: all. Default: None.
        seed (int): Synthesis seed. Default: 0.
        device (str): ``'auto'``, ``'cpu'`` or ``'cuda[:i]'``. Default: 'auto'.
        max_images (int | None): Clean images (or images per label) to use; None: all. Default: None.
        log (callable): Progress lines. Default: print.
        max_side (int | None): Centre-crop side. Default: 256.

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
    samples, kind = load_samples(data, categories, seed, max_images, max_side)
    log(f'audit: {opt["network_g"]["type"]} on {len(samples)} {kind} images from {data}')
    result = {'option_file': option_path, 'network': opt['network_g']['type'],
              'weights': (opt.get('path') or {}).get('pretrain_network_g'), 'data': data, 'data_kind': kind,
              'labels': list(dict.fromkeys(s.label for s in samples)), 'seed': seed, 'max_side': max_side}
    result.update(audit_network(net, samples, kind, model.device, log))
    examples = result.pop('_examples')
    os.makedirs(out_dir, exist_ok=True)
    paths = {'json': osp.join(out_dir, 'audit.json'), 'md': osp.join(out_dir, 'audit.md'),
             'png': osp.join(out_dir, 'audit.png')}
    with open(paths['json'], 'w', encoding='utf-8') as f:
        json.dump({k: round_floats(v) for k, v in result.items()}, f, indent=1)
    write_markdown(paths['md'], result)
    draw_audit_figure(paths['png'], {**result, '_examples': examples})
    return {**result, **paths, 'headline': headline(result)}
