"""Per-label metric summaries: the one definition of the per-label means, the mean over labels (the headline number
of multi-degradation protocols) and the mean over images, shared by validation and the leaderboard, and the CSV
that validation writes."""
import csv
import os

#: An output is *harmful* when its PSNR is more than this many dB below its input's; the harm rate is the share of
#: such images (issue 22: "do no harm").
HARM_MARGIN_DB = 0.5
#: The per-image harm indicator's name in metric records, CSVs and leaderboards (a share in [0, 1], lower is better).
HARM = 'harm'


def psnr_metric(metric_opts):
    """The name of the first PSNR metric (``type: calculate_psnr``) in ``val.metrics``, else None: the harm rate needs
    one."""
    return next((k for k, o in (metric_opts or {}).items() if (o or {}).get('type') == 'calculate_psnr'), None)


def harmed(output_psnr, input_psnr, margin=HARM_MARGIN_DB):
    """1.0 if the output's PSNR is more than ``margin`` dB below the input's, else 0.0 (one image's harm)."""
    return float(output_psnr < input_psnr - margin)


def label_summary(records, metrics, where='dataset'):
    """Summarise per-image metric values by label.

    Args:
        records (list[tuple[str | None, dict]]): ``(label, {metric: value})`` per image; label None for unlabelled
            data (all or none of the images).
        metrics (list[str]): Metric names.
        where (str): What the records come from, for messages. Default: 'dataset'.

    Returns:
        dict: ``metrics`` (names), ``labels`` (in order of first appearance), ``per_label`` (``{label: {metric:
        mean}}``), ``counts`` (``{label: images}``), ``mean`` (mean over labels; over images for unlabelled data),
        ``overall`` (mean over images) and ``images`` (count).
    """
    if not records:
        raise ValueError(f'{where} is empty: no images to score')
    groups = {}
    for label, values in records:
        groups.setdefault(label, []).append(values)
    if None in groups and len(groups) > 1:
        raise ValueError(f'{where}: some images have a label_name and some do not')
    per_label = {label: {m: sum(v[m] for v in vals) / len(vals) for m in metrics}
                 for label, vals in groups.items() if label is not None}
    overall = {m: sum(v[m] for _, v in records) / len(records) for m in metrics}
    mean = {m: sum(v[m] for v in per_label.values()) / len(per_label) for m in metrics} if per_label else dict(overall)
    return {'metrics': list(metrics), 'labels': list(per_label), 'per_label': per_label,
            'counts': {label: len(groups[label]) for label in per_label}, 'mean': mean, 'overall': overall,
            'images': len(records)}


def summary_rows(summary):
    """The rows of the metrics CSV and of the validation log: ``(label, images, {metric: value})`` per label, then
    ``mean_over_labels`` (labelled data only), then ``overall``."""
    rows = [(label, summary['counts'][label], summary['per_label'][label]) for label in summary['labels']]
    if summary['labels']:
        rows.append(('mean_over_labels', summary['images'], summary['mean']))
    rows.append(('overall', summary['images'], summary['overall']))
    return rows


def write_label_metrics_csv(path, dataset_name, current_iter, summary):
    """Write :func:`summary_rows` as ``dataset, iter, label, images, <metrics>`` (values to 6 decimals), atomically.

    Args:
        path (str): CSV file (its folder is created).
        dataset_name (str): Dataset name.
        current_iter (int | str): Iteration (or the test run's name).
        summary (dict): From :func:`label_summary`.
    """
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    metrics = summary['metrics']
    tmp = f'{path}.{os.getpid()}.tmp'
    with open(tmp, 'w', newline='') as f:
        writer = csv.writer(f)
        writer.writerow(['dataset', 'iter', 'label', 'images', *metrics])
        for label, count, values in summary_rows(summary):
            writer.writerow([dataset_name, current_iter, label, count, *(f'{values[m]:.6f}' for m in metrics)])
    os.replace(tmp, path)
