"""Multiply-add rate of InterIR architecture variants against a plain 64->64 3x3 convolution (CPU, 2 threads).

The data behind the decision the rate goal needs (docs/interir.md, "What would reach 0.5"): the default preset
and variants that drop or shrink parts of the specified architecture, each timed once per round with the
reference convolution in the same round (steady allocator, as ``bench_interir.py``). The variants are
measurements, not presets: none of them is the specified model.

    .venv/bin/python benchmarks/bench_interir_variants.py [--repeats 7] [--threads 2] [--quick]
"""
import argparse
import os
import statistics

import torch
import torch.nn.functional as F
from _common import add_quick_flag, emit, interleaved, set_threads, spread, steady_malloc
from torch import nn

import interir_plugin  # noqa: F401  (applies the BasicSR shims, registers the archs)
from interir_plugin.archs.econv import ExplainableBlock, FrequencyBranch
from interir_plugin.archs.interir_arch import InterIR
from interir_plugin.utils.complexity import model_complexity


class _NoBranch(nn.Module):
    """Stands in for a dropped frequency branch: adds nothing."""

    def forward(self, x):
        return 0


def _frequency(net, keep=None, expand=None):
    """Drop the frequency branch of every explainable block whose role (``eb_p``, ...) is not in ``keep``
    (None: keep all), or rebuild the kept ones with MLP expansion ``expand`` (None: unchanged)."""
    for name, m in net.named_modules():
        if isinstance(m, ExplainableBlock):
            if keep is not None and not any(f'.{role}.' in f'.{name}.' for role in keep):
                m.freq = _NoBranch()
            elif expand is not None:
                m.freq = FrequencyBranch(m.conv1.in_ch, expand)
    return net


def variants(**common):
    """The measured variants; ``common`` goes to every ``InterIR`` (``--quick``: one stage)."""
    return {
        'default (C 32, M 4)': InterIR(**common),
        'no frequency branch': _frequency(InterIR(**common), keep=()),
        'frequency branch only in EB_P, EB_Q, EB_lambda': _frequency(InterIR(**common),
                                                                      keep=('eb_p', 'eb_q', 'eb_lam')),
        'frequency MLP hidden 2C (not 4C)': _frequency(InterIR(**common), expand=1),
        'C 40, M 2': InterIR(num_feat=40, num_experts=2, **common),
        'C 48, M 1': InterIR(num_feat=48, num_experts=1, **common),
        'C 48, M 1, no frequency branch': _frequency(InterIR(num_feat=48, num_experts=1, **common), keep=()),
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--repeats', type=int, default=7, help='timed rounds (>= 5), after one warm-up round')
    parser.add_argument('--threads', type=int, default=2, help='torch intra-op threads (the reference is 2)')
    add_quick_flag(parser)
    args = parser.parse_args()
    size = 32 if args.quick else 256
    if args.quick:
        args.repeats = 1
    elif args.repeats < 5:
        parser.error(f'--repeats must be >= 5, got {args.repeats}')
    malloc = 'steady' if steady_malloc() else 'default'
    set_threads(args.threads)
    torch.manual_seed(0)
    nets = {name: net.eval() for name, net in variants(**({'num_stages': 1} if args.quick else {})).items()}
    info = {name: model_complexity(net, (3, size, size)) for name, net in nets.items()}
    x = torch.rand(1, 3, size, size)
    conv_in, conv_w = torch.randn(1, 64, 256, 256), torch.randn(64, 64, 3, 3)
    conv_macs = conv_w.numel() * 256 * 256
    cases = {name: (lambda net=net: net(x)) for name, net in nets.items()}
    cases['conv64'] = lambda: F.conv2d(conv_in, conv_w, padding=1)
    load_before = os.getloadavg()
    with torch.inference_mode():
        wall, _ = interleaved(cases, args.repeats)
    fractions = {name: [info[name]['macs'] / wall[name][i] / (conv_macs / wall['conv64'][i])
                        for i in range(args.repeats)] for name in nets}
    results = {'input': [1, 3, size, size], 'repeats': args.repeats, 'malloc': malloc, 'loadavg_before': load_before,
               'loadavg_after': os.getloadavg(),
               'params': {name: i['params'] for name, i in info.items()},
               'macs': {name: i['macs'] for name, i in info.items()},
               'seconds': {name: spread(v) for name, v in wall.items()},
               'mac_rate_fraction_per_round': {name: spread(v) for name, v in fractions.items()}}
    rows = [{'variant': name, 'params (M)': info[name]['mparams'], 'GMAC (mmengine)': info[name]['gmacs'],
             'forward s (median)': statistics.median(wall[name]), 'fraction min': min(v),
             'fraction median': statistics.median(v), 'fraction max': max(v)} for name, v in fractions.items()]
    emit('interir_variants', results, rows, list(rows[0]))


if __name__ == '__main__':
    main()
