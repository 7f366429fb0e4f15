"""InterIR forward speed on CPU (2 threads): fused vs unfused EConv, InterIR vs DGUNet, and achieved
multiply-adds per second against a plain 64->64 3x3 convolution, all timed interleaved in one run.

Every round times each case once (in the same order), so slow phases of a shared machine hit all cases alike;
ratios are given from the medians and per round (min/median/max over rounds).

    .venv/bin/python benchmarks/bench_interir.py [--repeats 5] [--size 256] [--no-dgunet] [--threads 2]
"""
import argparse
import statistics
import time

import torch
import torch.nn.functional as F
from _common import emit, set_threads

import interir_plugin  # noqa: F401  (applies the BasicSR shims, registers the archs)
from interir_plugin.archs.econv import set_fused
from interir_plugin.utils.complexity import model_complexity


def _stats(values):
    return {'min': min(values), 'median': statistics.median(values), 'max': max(values), 'runs': values}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--repeats', type=int, default=5, help='timed rounds (>= 5), after one warm-up round')
    parser.add_argument('--size', type=int, default=256, help='input height = width')
    parser.add_argument('--no-dgunet', action='store_true', help='skip DGUNet (its forward takes tens of seconds)')
    parser.add_argument('--threads', type=int, default=2, help='torch intra-op threads (the reference is 2)')
    args = parser.parse_args()
    from basicsr.archs import build_network  # after the plugin's shims

    if args.repeats < 5:
        parser.error(f'--repeats must be >= 5, got {args.repeats}')
    set_threads(args.threads)
    torch.manual_seed(0)
    size = args.size
    x = torch.rand(1, 3, size, size)
    interir = build_network({'type': 'InterIR'}).eval()
    conv = torch.nn.Conv2d(64, 64, 3, padding=1, bias=False).eval()
    conv_in = torch.randn(1, 64, 256, 256)
    nets = {'interir': (interir, 3), 'conv64': (conv, 64)}
    if not args.no_dgunet:
        nets['dgunet'] = (build_network({'type': 'DGUNet'}).eval(), 3)
    macs = {name: model_complexity(net, (ch, 256, 256) if name == 'conv64' else (ch, size, size))['macs']
            for name, (net, ch) in nets.items()}
    params = {name: sum(p.numel() for p in net.parameters()) for name, (net, _) in nets.items()}

    def interir_path(fused):
        def run():
            set_fused(interir, fused)  # switched at call time: the cases alternate within every round
            return interir(x)
        return run

    cases = {'interir_fused': interir_path(True), 'interir_unfused': interir_path(False),
             'conv64': lambda: F.conv2d(conv_in, conv.weight, padding=1)}
    if 'dgunet' in nets:
        cases['dgunet'] = lambda: nets['dgunet'][0](x)
    times = {name: [] for name in cases}
    with torch.inference_mode():
        for rnd in range(args.repeats + 1):  # round 0 warms up
            for name, fn in cases.items():
                t0 = time.perf_counter()
                fn()
                if rnd:
                    times[name].append(time.perf_counter() - t0)
    set_fused(interir, True)

    def rate(name, t):  # multiply-adds per second
        return macs['conv64' if name == 'conv64' else 'interir'] / t

    rounds = range(args.repeats)
    ratios = {
        'fused_speedup (unfused / fused)': [times['interir_unfused'][i] / times['interir_fused'][i] for i in rounds],
        'mac_rate_fraction (InterIR / conv64)': [rate('interir', times['interir_fused'][i]) /
                                                 rate('conv64', times['conv64'][i]) for i in rounds],
    }
    goals = {'fused_speedup (unfused / fused)': '>= 1.5', 'mac_rate_fraction (InterIR / conv64)': '>= 0.5'}
    if 'dgunet' in times:
        ratios['time_fraction (InterIR / DGUNet)'] = [times['interir_fused'][i] / times['dgunet'][i] for i in rounds]
        goals['time_fraction (InterIR / DGUNet)'] = '<= 0.2'
    results = {
        'input': [1, 3, size, size], 'conv64_input': [1, 64, 256, 256], 'repeats': args.repeats,
        'params': params, 'macs': macs,
        'seconds': {name: _stats(v) for name, v in times.items()},
        'ratios_per_round': {name: _stats(v) for name, v in ratios.items()},
        'ratios_of_medians': {
            'fused_speedup (unfused / fused)':
                statistics.median(times['interir_unfused']) / statistics.median(times['interir_fused']),
            'mac_rate_fraction (InterIR / conv64)':
                rate('interir', statistics.median(times['interir_fused'])) /
                rate('conv64', statistics.median(times['conv64'])),
        },
        'goals': goals,
    }
    if 'dgunet' in times:
        results['ratios_of_medians']['time_fraction (InterIR / DGUNet)'] = (
            statistics.median(times['interir_fused']) / statistics.median(times['dgunet']))
    rows = []
    for name, v in times.items():
        net_name = 'conv64' if name == 'conv64' else 'interir' if name.startswith('interir') else name
        rows.append({'case': name, 'unit': 's', 'min': min(v), 'median': statistics.median(v), 'max': max(v),
                     'GMAC (mmengine)': macs[net_name] / 1e9,
                     'GMAC/s at median': macs[net_name] / statistics.median(v) / 1e9})
    for name, v in ratios.items():
        rows.append({'case': name, 'unit': 'ratio', 'min': min(v), 'median': statistics.median(v), 'max': max(v),
                     'GMAC (mmengine)': '-', 'GMAC/s at median': f'goal {goals[name]}'})
    emit('interir', results, rows, ['case', 'unit', 'min', 'median', 'max', 'GMAC (mmengine)', 'GMAC/s at median'])

if __name__ == '__main__':
    main()
