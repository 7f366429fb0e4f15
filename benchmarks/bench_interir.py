"""InterIR forward speed on CPU (2 threads): fused vs unfused EConv, InterIR vs DGUNet, and achieved
multiply-adds per second against a plain 64->64 3x3 convolution, all timed interleaved in one run.

Every round times each case once (in the same order), so slow phases of a shared machine hit all cases alike;
ratios are given per round (min/median/max over rounds), from wall time and from process CPU time (with one
thread the latter ignores the time the process waits for a core, the fairer figure on a busy machine).

    .venv/bin/python benchmarks/bench_interir.py [--repeats 5] [--size 256] [--no-dgunet] [--threads 2]
"""
import argparse
import os
import statistics
import time

import torch
import torch.nn.functional as F
from _common import emit, set_threads, summarize

import interir_plugin  # noqa: F401  (applies the BasicSR shims, registers the archs)
from interir_plugin.archs.econv import set_fused
from interir_plugin.utils.complexity import model_complexity


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
    load_before = os.getloadavg()
    wall, cpu = {name: [] for name in cases}, {name: [] for name in cases}
    with torch.inference_mode():
        for rnd in range(args.repeats + 1):  # round 0 warms up
            for name, fn in cases.items():
                t0, c0 = time.perf_counter(), time.process_time()
                fn()
                if rnd:
                    wall[name].append(time.perf_counter() - t0)
                    cpu[name].append(time.process_time() - c0)
    set_fused(interir, True)
    goals = {'fused_speedup (unfused / fused)': '>= 1.5', 'mac_rate_fraction (InterIR / conv64)': '>= 0.5',
             'time_fraction (InterIR / DGUNet)': '<= 0.2'}

    def ratios(t):  # per round, from one kind of time
        rounds = range(args.repeats)
        out = {'fused_speedup (unfused / fused)': [t['interir_unfused'][i] / t['interir_fused'][i] for i in rounds],
               'mac_rate_fraction (InterIR / conv64)': [macs['interir'] / t['interir_fused'][i] /
                                                        (macs['conv64'] / t['conv64'][i]) for i in rounds]}
        if 'dgunet' in t:
            out['time_fraction (InterIR / DGUNet)'] = [t['interir_fused'][i] / t['dgunet'][i] for i in rounds]
        return out

    wall_ratios, cpu_ratios = ratios(wall), ratios(cpu)
    results = {
        'input': [1, 3, size, size], 'conv64_input': [1, 64, 256, 256], 'repeats': args.repeats,
        'loadavg_before': load_before, 'loadavg_after': os.getloadavg(), 'params': params, 'macs': macs,
        'seconds': {name: summarize(v) for name, v in wall.items()},
        'cpu_seconds': {name: summarize(v) for name, v in cpu.items()},
        'ratios_per_round': {name: summarize(v) for name, v in wall_ratios.items()},
        'ratios_per_round_cpu_time': {name: summarize(v) for name, v in cpu_ratios.items()},
        'goals': goals,
    }
    rows = []
    for name, v in wall.items():
        net_name = 'conv64' if name == 'conv64' else 'interir' if name.startswith('interir') else name
        rows.append({'case': name, 'unit': 's', 'min': min(v), 'median': statistics.median(v), 'max': max(v),
                     'GMAC (mmengine)': macs[net_name] / 1e9,
                     'GMAC/s at median': macs[net_name] / statistics.median(v) / 1e9})
    for kind, table in (('wall', wall_ratios), ('process CPU', cpu_ratios)):
        for name, v in table.items():
            rows.append({'case': f'{name} [{kind} time]', 'unit': 'ratio', 'min': min(v),
                         'median': statistics.median(v), 'max': max(v), 'GMAC (mmengine)': '-',
                         'GMAC/s at median': f'goal {goals[name]}'})
    emit('interir', results, rows, ['case', 'unit', 'min', 'median', 'max', 'GMAC (mmengine)', 'GMAC/s at median'])


if __name__ == '__main__':
    main()
