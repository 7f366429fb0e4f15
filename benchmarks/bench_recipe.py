"""Recipe search on MiniCDD: train one network for N iterations or T seconds with a plain loop (the plugin's data
set, AdamW, a cosine schedule, gradient clipping) and score it on MiniCDD's held-out split, per label and per stage.

The decisions of the MiniCDD CPU recipe and of InterIR's output head (docs/interir.md, docs/training.md) were made
with this script; its loop is the recipe's without BasicSR's trainer around it, so one run costs only its training
and scoring. Results are printed as one JSON line and appended to ``--out`` (JSON lines).

    OMP_WAIT_POLICY=PASSIVE python benchmarks/bench_recipe.py --iters 600 --batch 8 --patch 64 --loss l2 \\
        --net '{"num_stages": 0}' --tag s0-l2

Run it from a folder holding ``datasets/MiniCDD`` (``interir prepare minicdd --out datasets/MiniCDD``).
``--quick`` builds MiniCDD in a temporary folder, trains a tiny InterIR for 3 iterations and scores 2 labels: it
checks the wiring, its numbers mean nothing. Prints the JSON document and a per-label table.
"""
import argparse
import json
import math
import os
import random
import tempfile
import time

import numpy as np
import torch
from _common import emit  # noqa: E402

import interir_plugin  # noqa: E402,F401  (BasicSR shims and registration: before basicsr)
from interir_plugin.data.degradations import CDD11_CATEGORIES  # noqa: E402
from interir_plugin.data.multi_degradation_dataset import MultiDegradationPairedDataset  # noqa: E402
from interir_plugin.losses.presence_loss import PresenceLoss  # noqa: E402
from interir_plugin.utils.metrics import harmed  # noqa: E402
from interir_plugin.utils.padding import crop_to, pad_for_network  # noqa: E402
from interir_plugin.utils.presence import PRESENCE_PARTS, presence_targets  # noqa: E402

#: InterIR-S's size; ``--net`` overrides keys (JSON).
BASE_NET = {'type': 'InterIR', 'num_feat': 16, 'unshuffle': 4, 'num_stages': 2, 'num_experts': 4, 'expand': 2,
            'freq_branch': False}
#: ``--loss``: the pixel term as an option file's ``train.pixel_opt`` names it (built by BasicSR's ``build_loss``).
LOSSES = {
    'charbonnier': {'type': 'CharbonnierLoss', 'eps': 1e-6},
    'l2': {'type': 'MSELoss'},
    'psnr': {'type': 'PSNRLoss'},  # minus each image's PSNR, averaged
}


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--net', default='{}', help='JSON overrides of the network options (InterIR-S by default)')
    ap.add_argument('--iters', type=int, default=0, help='training iterations (or --seconds)')
    ap.add_argument('--seconds', type=float, default=0, help='training seconds (or --iters)')
    ap.add_argument('--lr', type=float, default=1e-3)
    ap.add_argument('--warmup', type=float, default=0.05, help='warm-up fraction of the schedule')
    ap.add_argument('--batch', type=int, default=8)
    ap.add_argument('--patch', type=int, default=64)
    ap.add_argument('--data', choices=('synth', 'fixed'), default='synth',
                    help='synth: clean train photos degraded on the fly; fixed: the stored MiniCDD train pairs')
    ap.add_argument('--photos', default='astronaut,rocket,immunohistochemistry',
                    help='train photos for --data synth (comma-separated; empty: all five)')
    ap.add_argument('--identity-pairs', action='store_true',
                    help='--data synth: add clean -> clean pairs as a 12th training label (no degradation, no change)')
    ap.add_argument('--stage-weights', choices=('equal', 'final', 'ramp', 'geometric'), default='equal',
                    help='per-output loss weights: 1 each, final only, (k + 1) / K, or ratio ** (K - 1 - k)')
    ap.add_argument('--stage-ratio', type=float, default=0.25, help='the ratio of --stage-weights geometric')
    ap.add_argument('--loss', choices=tuple(LOSSES), default='l2')
    ap.add_argument('--clip', type=float, default=1.0, help='gradient-norm clip (0: none)')
    ap.add_argument('--presence-weight', type=float, default=0.5,
                    help="weight of the recogniser's cross-entropy (networks with presence gates)")
    ap.add_argument('--presence-lr-scale', type=float, default=10.0,
                    help="the recogniser's learning rate over --lr (networks with presence gates)")
    ap.add_argument('--threads', type=int, default=1)
    ap.add_argument('--split', default='heldout',
                    help='MiniCDD split folder(s) scored, comma-separated (decisions: the leave-one-renderer-out '
                         'loro_heldout; heldout: our own renderer)')
    ap.add_argument('--protocol', default='',
                    help='train on this protocol (e.g. minicdd_loro) instead of --data/--photos')
    ap.add_argument('--train-split', default='train', help='the split of --protocol trained on')
    ap.add_argument('--grey-prob', type=float, default=0.0, help="the training set's grey_prob (with --protocol)")
    ap.add_argument('--severity', type=float, default=0.0,
                    help="the training set's severity [SEVERITY, 1] (with --protocol; 0: none)")
    ap.add_argument('--data-time', type=int, default=1,
                    help='1: the clock counts data loading too, as the demo\'s time budget does; 0: steps only')
    ap.add_argument('--root', default='datasets/MiniCDD')
    ap.add_argument('--seed', type=int, default=10)
    ap.add_argument('--tag', default='')
    ap.add_argument('--out', default='bench_recipe.jsonl')
    ap.add_argument('--quick', action='store_true', help='a tiny run on a temporary MiniCDD (wiring check)')
    args = ap.parse_args(argv)
    if args.quick:
        args.net, args.iters, args.seconds, args.batch, args.patch = '{"num_feat": 8, "num_stages": 1}', 3, 0, 2, 32
    if bool(args.iters) == bool(args.seconds):
        ap.error('give one of --iters and --seconds')
    return args


def train_set(args):
    """The training data set: on-the-fly synthesis from the chosen clean photos, or the stored pairs."""
    if args.protocol:
        opt = {'protocol': args.protocol, 'protocol_root': args.root, 'protocol_split': args.train_split,
               'grey_prob': args.grey_prob, **({'severity': [args.severity, 1.0]} if args.severity else {})}
    elif args.data == 'fixed':
        opt = {'protocol': 'minicdd', 'protocol_root': args.root}
    else:
        chosen = set(filter(None, args.photos.split(',')))
        names = [n for n in sorted(os.listdir(os.path.join(args.root, 'train', 'clear')))
                 if not chosen or n.rsplit('_', 1)[0] in chosen]
        meta = os.path.abspath(f'{args.out}.train_photos.txt')
        with open(meta, 'w', encoding='utf-8') as f:
            f.write(''.join(f'{n}\n' for n in names))
        opt = {'labels': list(CDD11_CATEGORIES),
               'sources': [{'label': c, 'dataroot_gt': os.path.join(args.root, 'train', 'clear'), 'synthesis': c,
                            'repeat': 100, 'meta_info_file': meta} for c in CDD11_CATEGORIES]}
        if args.identity_pairs:  # noise of sigma 0: the clean image itself
            opt['labels'].append('clear')
            opt['sources'].append({'label': 'clear', 'dataroot_gt': os.path.join(args.root, 'train', 'clear'),
                                   'synthesis': {'noise': {'sigma': 0}}, 'repeat': 100, 'meta_info_file': meta})
    return MultiDegradationPairedDataset({**opt, 'phase': 'train', 'gt_size': args.patch, 'use_hflip': True,
                                          'use_rot': True, 'sampling': 'balanced', 'seed': 0})


def train(net, args):
    """Train ``net`` in place; return ``(iterations, training seconds, mean loss of the last 20)``."""
    loader = torch.utils.data.DataLoader(train_set(args), batch_size=args.batch, shuffle=True, drop_last=True)
    recognises = getattr(net, 'recognises', False)  # as UnfoldingRestorationModel: gates and the recogniser's step
    params = (net.presence_param_groups(net.parameters(), args.lr, args.presence_lr_scale) if recognises
              else net.parameters())
    opt = torch.optim.AdamW(params, lr=args.lr, weight_decay=0, betas=(0.9, 0.99))
    for group in opt.param_groups:
        group['base_lr'] = group['lr']
    from basicsr.losses import build_loss  # after the plugin's shims

    loss_fn, it, seconds, losses = build_loss(dict(LOSSES[args.loss])), 0, 0.0, []
    start = time.perf_counter()
    while True:
        for batch in loader:
            if not args.data_time:
                start = time.perf_counter()
            f = it / args.iters if args.iters else seconds / args.seconds
            scale = f / args.warmup if f < args.warmup else 0.5 * (1 + math.cos(math.pi * (f - args.warmup)
                                                                                 / (1 - args.warmup)))
            for group in opt.param_groups:
                group['lr'] = max(group['base_lr'] * scale, group['base_lr'] * 0.01)
            if recognises:  # teacher-forced presence gates
                targets, known = presence_targets(batch['label_name'])
                outs, logits = net(batch['lq'], presence=targets)
                gate_loss = PresenceLoss(args.presence_weight)(logits, targets, known)
            else:
                outs, gate_loss = _outputs(net(batch['lq'])), 0
            n = len(outs)
            weights = {'equal': [1.0] * n, 'final': [0.0] * (n - 1) + [1.0],
                       'ramp': [(k + 1) / n for k in range(n)],
                       'geometric': [args.stage_ratio ** (n - 1 - k) for k in range(n)]}[args.stage_weights]
            loss = sum(w * loss_fn(o, batch['gt']) for w, o in zip(weights, outs) if w) + gate_loss
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if args.clip:
                torch.nn.utils.clip_grad_norm_(net.parameters(), args.clip)
            opt.step()
            losses.append(loss.item())
            it += 1
            seconds += time.perf_counter() - start
            start = time.perf_counter()
            if (args.iters and it >= args.iters) or (args.seconds and seconds >= args.seconds):
                return it, seconds, float(np.mean(losses[-20:]))


def _outputs(out):
    """Stage outputs as a list (single-output networks such as BasicSR's RIDNet return a tensor)."""
    return list(out) if isinstance(out, (list, tuple)) else [out]


def score(net, root, split, labels=None):
    """Mean PSNR/SSIM per label of the input, the first and the final output of ``net`` on a MiniCDD split, the harm
    rate (share of images whose final PSNR is more than 0.5 dB below the input's), and for a network with a
    degradation recogniser its decisions against the labels' parts (accuracy per part, expected calibration error).

    Returns:
        tuple: ``({label: {'input', 'first', 'final': [PSNR, SSIM], 'harm': share}}, {the same, mean over labels},
        recogniser figures or None)``.
    """
    from basicsr.metrics import calculate_psnr, calculate_ssim  # after the plugin's shims
    from basicsr.utils import tensor2img  # the 8-bit image validation scores

    data = MultiDegradationPairedDataset({'cdd11': {'root': os.path.join(root, split),
                                                    **({'categories': list(labels)} if labels else {})},
                                          'phase': 'val'})
    per_label, probs, targets = {}, [], []
    recognises = getattr(net, 'recognises', False)
    with torch.no_grad():
        for i in range(len(data)):
            sample = data[i]
            x, size = pad_for_network(sample['lq'][None], net)
            if recognises:
                outs, aux = net(x, return_aux=True)
                probs.append(torch.sigmoid(aux['presence_logits'][0].float()).numpy())
                targets.append(presence_targets([sample['label_name']])[0][0].numpy())
            else:
                outs = _outputs(net(x))
            outs = crop_to(outs, size)
            gt = tensor2img([sample['gt']])
            record = per_label.setdefault(sample['label_name'], {'input': [], 'first': [], 'final': [], 'harm': []})
            for key, t in (('input', sample['lq'][None]), ('first', outs[0]), ('final', outs[-1])):
                img = tensor2img([t[0]])
                record[key].append((calculate_psnr(img, gt, 0), calculate_ssim(img, gt, 0)))
            record['harm'].append(harmed(record['final'][-1][0], record['input'][-1][0]))
    table = {lab: {k: np.mean(v, 0).round(4).tolist() for k, v in r.items()} for lab, r in per_label.items()}
    mean = {k: np.mean([table[lab][k] for lab in table], 0).round(4).tolist()
            for k in ('input', 'first', 'final', 'harm')}
    return table, mean, recogniser_figures(np.array(probs), np.array(targets)) if recognises else None


def recogniser_figures(probs, targets, bins=10):
    """Accuracy (decided at probability 0.5) and expected calibration error (``bins`` equal-width bins of the
    predicted probability; the mean over bins of |mean probability - share present|, weighted by the bin's count)
    per presence part, over images ``probs`` and ``targets`` (``N x 4``)."""
    out = {}
    for k, part in enumerate(PRESENCE_PARTS):
        p, t = probs[:, k], targets[:, k]
        which = np.minimum((p * bins).astype(int), bins - 1)
        ece = sum(abs(p[which == b].mean() - t[which == b].mean()) * (which == b).mean()
                  for b in range(bins) if (which == b).any())
        out[part] = {'accuracy': round(float(((p > 0.5) == (t > 0.5)).mean()), 4), 'ece': round(float(ece), 4)}
    return out


def main(argv=None):
    args = parse_args(argv)
    if args.quick:
        from interir_plugin.data.preparation import make_minicdd

        with tempfile.TemporaryDirectory() as tmp:
            args.root, args.out = os.path.join(tmp, 'MiniCDD'), os.path.join(tmp, 'quick.jsonl')
            make_minicdd(args.root)
            return run(args)
    return run(args)


def run(args):
    """Train, score, print and append one result (see the module docstring)."""
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    random.seed(args.seed)
    np.random.seed(args.seed)
    from basicsr.utils.registry import ARCH_REGISTRY  # after the plugin's shims

    opts = {**BASE_NET, **json.loads(args.net)}
    net = ARCH_REGISTRY.get(opts.pop('type'))(**opts)
    iters, seconds, loss = train(net.train(), args)
    result = {'tag': args.tag, 'args': vars(args), 'params': sum(p.numel() for p in net.parameters()),
              'iters': iters, 'train_seconds': round(seconds, 1), 'loss_last20': round(loss, 4), 'splits': {}}
    rows = []
    for split in args.split.split(','):
        table, mean, recognised = score(net.eval(), args.root, split, CDD11_CATEGORIES[:2] if args.quick else None)
        result['splits'][split] = {
            'mean': mean, 'per_label': table, 'recogniser': recognised,
            'labels_above_input': sum(v['final'][0] > v['input'][0] for v in table.values())}
        rows += [{'split': split, 'label': lab, **{f'{k} PSNR': v[k][0] for k in ('input', 'first', 'final')},
                  'final SSIM': v['final'][1], 'harm': v['harm']} for lab, v in [*table.items(), ('mean', mean)]]
    with open(args.out, 'a', encoding='utf-8') as f:
        f.write(json.dumps(result) + '\n')
    emit('recipe', result, rows, list(rows[0]))
    return result


if __name__ == '__main__':
    main()
