"""The audit's statistics: AUC, held-out nearest-centroid accuracy, presence AUC, block means, correlation, float
PSNR, and the calibration of presence probabilities (accuracy at 0.5, expected calibration error)."""
import math

import numpy as np


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


def mean_or_none(values):
    """Mean of the values that are not None; None when there are none."""
    values = [v for v in values if v is not None]
    return float(np.mean(values)) if values else None


def expected_calibration_error(probabilities, truths, bins=10):
    """Expected calibration error of presence probabilities: ``sum_b n_b / N |mean(y_b) - mean(p_b)|``.

    The probabilities are split into ``bins`` equal-width bins of [0, 1] (``[k / bins, (k + 1) / bins)``, the last
    one closed); in each, the share of true presences is compared with the mean probability.

    Args:
        probabilities (array-like): ``N`` probabilities of presence in [0, 1].
        truths (array-like): ``N`` booleans, whether the component is present.
        bins (int): Number of bins. Default: 10.

    Returns:
        float | None: The ECE in [0, 1]; None for no rows.
    """
    p = np.asarray(probabilities, np.float64).ravel()
    y = np.asarray(truths, bool).ravel()
    if p.shape != y.shape:
        raise ValueError(f'expected_calibration_error: {p.size} probabilities but {y.size} truths')
    if not np.isfinite(p).all() or (p < 0).any() or (p > 1).any():
        raise ValueError(f'expected_calibration_error: probabilities must lie in [0, 1], got {p.min()}..{p.max()}')
    if not p.size:
        return None
    which = np.minimum((p * bins).astype(int), bins - 1)
    counts = np.bincount(which, minlength=bins)
    gap = np.abs(np.bincount(which, y, bins) - np.bincount(which, p, bins))  # per bin: n_b |mean(y) - mean(p)|
    return float(gap.sum() / counts.sum())


def calibration(probabilities, truths, bins=10):
    """Accuracy (decided at probability 0.5) and :func:`expected_calibration_error` of presence probabilities.

    Returns:
        dict: ``{accuracy, ece, images}``; accuracy and ece None for no rows.
    """
    p = np.asarray(probabilities, np.float64).ravel()
    y = np.asarray(truths, bool).ravel()
    accuracy = float(((p > 0.5) == y).mean()) if p.size else None
    return {'accuracy': accuracy, 'ece': expected_calibration_error(p, y, bins), 'images': int(p.size)}
