"""CPU cost of DGUNet and DGUNet+ at 1 x 3 x 256 x 256 (official defaults, random weights).

Per network: forward time (min/median/max over 5 runs after 2 untimed passes, eval, no_grad, 2 threads), peak memory,
parameters and multiply-adds (mmengine, via ``interir_plugin.utils.complexity.model_complexity``).

Peak memory is measured in a fresh process per network, two ways:
- ``peak_tensor_mb``: the most tensor memory one forward holds at once above what was held before it, replayed
  from the PyTorch profiler's allocation events (``interir_plugin.tools.profile.measure_peak_memory``, the
  project's CPU method; tensors only, exact and repeatable);
- ``rss_peak_mb`` / ``rss_before_mb``: the process's resident-set high-water mark (``VmHWM``) after the first
  forward and its resident set (``VmRSS``) just before it: what the OS sees, allocator caching included.

Run: ``.venv/bin/python benchmarks/bench_dgunet.py`` (``--size 128`` for a quicker look; ``--quick``: 32 x 32, one
run).
"""
import argparse
import json
import os
import subprocess
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import add_quick_flag, emit, set_threads, timeit  # noqa: E402

#: benchmarked networks: the official 'Deblurring & Denoising' DGUNet and the 'Deblurring' DGUNet+ defaults
NETS = {'DGUNet': {'n_feat': 80, 'scale_unetfeats': 48, 'scale_orsnetfeats': 32},
        'DGUNetPlus': {'n_feat': 96, 'scale_unetfeats': 48}}


def _status_mb(field):
    """A ``kB`` field of /proc/self/status (Linux) in MiB."""
    with open('/proc/self/status') as f:
        for line in f:
            if line.startswith(field + ':'):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f'{field} not found in /proc/self/status')


def measure_one(name, size, repeats, depth=None):
    """All figures of one network, measured in this (fresh) process (``depth``: middle stages, None for the
    official default)."""
    from interir_plugin.archs import dgunet_arch  # the package import applies the BasicSR shims first
    from interir_plugin.tools.profile import measure_peak_memory
    from interir_plugin.utils.complexity import model_complexity

    set_threads(2)
    torch.manual_seed(0)
    kwargs = {**NETS[name], **({} if depth is None else {'depth': depth})}
    net = getattr(dgunet_arch, name)(**kwargs).eval()
    x = torch.rand(1, 3, size, size)
    rss_before = _status_mb('VmRSS')
    with torch.no_grad():
        net(x)
    rss_peak = _status_mb('VmHWM')
    memory = measure_peak_memory(net, x)

    def forward():
        with torch.no_grad():
            net(x)

    times = timeit(forward, repeats=repeats, warmup=0)  # the two passes above warmed up already
    cost = model_complexity(net, (3, size, size))  # silences mmengine's per-operator warnings itself
    return {'net': name, 'network_g': {'type': name, **kwargs}, **cost,
            'time_s': times, 'peak_tensor_mb': memory['peak_memory_mb'], 'rss_before_mb': rss_before,
            'rss_peak_mb': rss_peak}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--size', type=int, default=256, help='input height and width (multiple of 8)')
    parser.add_argument('--repeats', type=int, default=5, help='timed forward passes (>= 5)')
    parser.add_argument('--one', choices=sorted(NETS), help=argparse.SUPPRESS)  # child process: one network
    add_quick_flag(parser)
    args = parser.parse_args()
    if args.quick:  # and one middle stage (depth 1): mmengine's count of the full nets takes long
        args.size, args.repeats = 32, 1
    if args.one:
        print(json.dumps(measure_one(args.one, args.size, args.repeats, 1 if args.quick else None)))
        return
    results = []
    for name in NETS:  # a fresh process per network, so its resident-set high-water mark is its own
        child = subprocess.run([sys.executable, os.path.abspath(__file__), '--one', name, '--size', str(args.size),
                                '--repeats', str(args.repeats)] + (['--quick'] if args.quick else []),
                               capture_output=True, text=True)
        if child.returncode:
            raise RuntimeError(f'{name} benchmark failed:\n{child.stderr}')
        results.append(json.loads(child.stdout.strip().splitlines()[-1]))
    set_threads(2)  # so emit() reports the threads the children used
    base = results[0]['time_s']['median']
    rows = [{'net': r['net'], 'input': f'1x3x{args.size}x{args.size}', 'Mparams': r['mparams'], 'GMACs': r['gmacs'],
             'min_s': r['time_s']['min'], 'median_s': r['time_s']['median'], 'max_s': r['time_s']['max'],
             'median_vs_DGUNet': r['time_s']['median'] / base, 'peak_tensor_MiB': r['peak_tensor_mb'],
             'rss_peak_MiB': r['rss_peak_mb'], 'rss_before_MiB': r['rss_before_mb']} for r in results]
    emit('dgunet_cpu_forward', {'input': [1, 3, args.size, args.size], 'repeats': args.repeats,
                                'results': results}, rows, list(rows[0]))


if __name__ == '__main__':
    main()
