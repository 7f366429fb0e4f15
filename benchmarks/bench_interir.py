"""InterIR forward speed on CPU (2 threads): fused vs unfused EConv, InterIR vs DGUNet, and achieved
multiply-adds per second against a plain 64->64 3x3 convolution, all timed interleaved in one run.

Every round times each case once (in the same order), so slow phases of a shared machine hit all cases alike;
ratios are given per round (min/median/max over rounds), from wall time and from process CPU time (with one
thread the latter ignores the time the process waits for a core, the fairer figure on a busy machine).

The plain convolution is the machine's practical peak only in its steady state: by default the process keeps
freed memory (``--malloc steady``); otherwise its 16 MB output, returned to the kernel and faulted in again,
costs it up to 60 % more time in some runs and nothing in others.

Ceiling of the multiply-add rate: one fused forward is recorded operator by operator (a ``TorchDispatchMode``
keeps every call with a copy of its inputs), and two subsets are replayed as rounds of their own: the operators
mmengine counts (convolutions, ``addmm``/``mm``/``bmm``/``matmul``, ``linear``), and those plus the FFTs and
GELUs the architecture prescribes. Their rates against the same round's plain convolution bound what any
implementation of the forward could reach if everything else (element-wise updates, copies, routing, Python)
were free.

    .venv/bin/python benchmarks/bench_interir.py [--repeats 5] [--size 256] [--no-dgunet] [--threads 2]
        [--malloc steady|default] [--compile] [--quick]
"""
import argparse
import math
import os
import statistics

import torch
import torch.nn.functional as F
from _common import add_quick_flag, emit, interleaved, set_threads, spread, steady_malloc
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_map_only

import interir_plugin  # noqa: F401  (applies the BasicSR shims, registers the archs)
from interir_plugin.archs.econv import set_fused
from interir_plugin.utils.complexity import model_complexity

#: Operators mmengine's counter gives multiply-adds to (its handles: ``_convolution``, ``addmm``, ``bmm``,
#: ``einsum``, ``matmul``, ``mm``, ``linear``), as the dispatcher shows them under ``inference_mode``
COUNTED_OPS = ('conv2d', 'convolution', 'addmm', 'bmm', 'einsum', 'matmul', 'mm', 'linear')
#: Work without counted multiply-adds that the architecture itself prescribes (docs/interir.md): the frequency
#: branch's transforms and the GELUs
PRESCRIBED_OPS = ('fft_rfft2', 'fft_irfft2', 'gelu')


class _Recorder(TorchDispatchMode):
    """Keep every operator call of ``ops`` (by name) with copies of its tensor arguments, in program order."""

    def __init__(self, ops):
        super().__init__()
        self.ops, self.calls = set(ops), []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        if func.overloadpacket.__name__ in self.ops:  # clones: later in-place updates must not reach the record
            self.calls.append((func, tree_map_only(torch.Tensor, torch.Tensor.clone, args), kwargs))
        return out


def record_ops(net, x, ops):
    """The calls of ``ops`` in one ``net(x)`` as ``(func, args, kwargs)`` (under ``inference_mode``)."""
    with torch.inference_mode(), _Recorder(ops) as rec:
        net(x)
    return rec.calls


def counted_macs(calls):
    """Multiply-adds of recorded counted calls from their shapes (a check that the replay holds all counted work)."""
    total = 0
    for func, args, _ in calls:
        name = func.overloadpacket.__name__
        if name in ('conv2d', 'convolution'):
            x, w = args[0], args[1]
            out_hw = x.shape[-2] * x.shape[-1]  # stride 1, 'same' padding: every 3x3/1x1 conv of InterIR
            total += x.shape[0] * out_hw * w.shape[0] * w[0].numel()
        elif name in ('addmm', 'mm', 'bmm', 'matmul'):
            a, b = args[-2:] if name == 'addmm' else args[:2]
            batch = torch.broadcast_shapes(a.shape[:-2], b.shape[:-2]) if a.dim() > 2 or b.dim() > 2 else ()
            total += math.prod(batch) * a.shape[-2] * a.shape[-1] * b.shape[-1]
        elif name == 'linear':
            total += args[0].numel() * args[1].shape[0]
        else:
            raise NotImplementedError(f'counted_macs: no rule for {name}')
    return total


def replay(calls):
    for func, args, kwargs in calls:
        func(*args, **kwargs)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--repeats', type=int, default=5, help='timed rounds (>= 5), after one warm-up round')
    parser.add_argument('--size', type=int, default=256, help='input height = width')
    parser.add_argument('--no-dgunet', action='store_true', help='skip DGUNet (its forward takes tens of seconds)')
    parser.add_argument('--threads', type=int, default=2, help='torch intra-op threads (the reference is 2)')
    parser.add_argument('--malloc', choices=('steady', 'default'), default='steady',
                        help="steady: keep freed memory in the process (see _common.steady_malloc), so no case pays "
                             "page faults by chance; default: glibc's own settings")
    parser.add_argument('--compile', action='store_true',
                        help='also time torch.compile(InterIR) (inductor; needs a C++ compiler, minutes to build)')
    add_quick_flag(parser)
    args = parser.parse_args()
    from basicsr.archs import build_network  # after the plugin's shims

    shrink = {'InterIR': {}, 'DGUNet': {}}
    if args.quick:  # one stage each: mmengine's count of the full nets alone takes tens of seconds
        args.size, args.repeats, args.compile = 32, 1, False
        shrink = {'InterIR': {'num_stages': 1}, 'DGUNet': {'depth': 1}}
    elif args.repeats < 5:
        parser.error(f'--repeats must be >= 5, got {args.repeats}')
    malloc = 'steady' if args.malloc == 'steady' and steady_malloc() else 'default'
    set_threads(args.threads)
    torch.manual_seed(0)
    size = args.size
    x = torch.rand(1, 3, size, size)
    interir = build_network({'type': 'InterIR', **shrink['InterIR']}).eval()
    conv = torch.nn.Conv2d(64, 64, 3, padding=1, bias=False).eval()
    conv_in = torch.randn(1, 64, 256, 256)
    nets = {'interir': (interir, 3), 'conv64': (conv, 64)}
    if not args.no_dgunet:
        nets['dgunet'] = (build_network({'type': 'DGUNet', **shrink['DGUNet']}).eval(), 3)
    macs = {name: model_complexity(net, (ch, 256, 256) if name == 'conv64' else (ch, size, size))['macs']
            for name, (net, ch) in nets.items()}
    params = {name: sum(p.numel() for p in net.parameters()) for name, (net, _) in nets.items()}

    def interir_path(fused):
        def run():
            set_fused(interir, fused)  # switched at call time: the cases alternate within every round
            return interir(x)
        return run

    prescribed = record_ops(interir, x, COUNTED_OPS + PRESCRIBED_OPS)  # EConvs are fused here (the default)
    counted = [call for call in prescribed if call[0].overloadpacket.__name__ in COUNTED_OPS]
    cases = {'interir_fused': interir_path(True), 'interir_unfused': interir_path(False),
             'conv64': lambda: F.conv2d(conv_in, conv.weight, padding=1),
             'replay_counted_ops': lambda: replay(counted), 'replay_counted_fft_gelu': lambda: replay(prescribed)}
    if args.compile:
        compiled = torch.compile(interir)
        cases['interir_compiled'] = lambda: (set_fused(interir, True), compiled(x))
    if 'dgunet' in nets:
        cases['dgunet'] = lambda: nets['dgunet'][0](x)
    load_before = os.getloadavg()
    with torch.inference_mode():
        wall, cpu = interleaved(cases, args.repeats)
    set_fused(interir, True)
    goals = {'fused_speedup (unfused / fused)': '>= 1.5', 'mac_rate_fraction (InterIR / conv64)': '>= 0.5',
             'time_fraction (InterIR / DGUNet)': '<= 0.2'}

    def ratios(t):  # per round, from one kind of time
        rounds = range(args.repeats)

        def rate_fraction(case):  # InterIR's multiply-adds in the time of `case`, per conv64 rate, per round
            return [macs['interir'] / t[case][i] / (macs['conv64'] / t['conv64'][i]) for i in rounds]

        out = {'fused_speedup (unfused / fused)': [t['interir_unfused'][i] / t['interir_fused'][i] for i in rounds],
               'mac_rate_fraction (InterIR / conv64)': rate_fraction('interir_fused'),
               'ceiling: counted ops alone / conv64': rate_fraction('replay_counted_ops'),
               'ceiling: counted ops + FFT + GELU / conv64': rate_fraction('replay_counted_fft_gelu')}
        if 'interir_compiled' in t:
            out['mac_rate_fraction (compiled InterIR / conv64)'] = rate_fraction('interir_compiled')
        if 'dgunet' in t:
            out['time_fraction (InterIR / DGUNet)'] = [t['interir_fused'][i] / t['dgunet'][i] for i in rounds]
        return out

    wall_ratios, cpu_ratios = ratios(wall), ratios(cpu)
    results = {
        'input': [1, 3, size, size], 'conv64_input': [1, 64, 256, 256], 'repeats': args.repeats,
        'loadavg_before': load_before, 'loadavg_after': os.getloadavg(), 'params': params, 'macs': macs,
        'seconds': {name: spread(v) for name, v in wall.items()},
        'cpu_seconds': {name: spread(v) for name, v in cpu.items()},
        'ratios_per_round': {name: spread(v) for name, v in wall_ratios.items()},
        'ratios_per_round_cpu_time': {name: spread(v) for name, v in cpu_ratios.items()},
        'replayed_calls': {'counted_ops': len(counted), 'counted_fft_gelu': len(prescribed)},
        'replayed_counted_macs': counted_macs(counted),  # vs macs['interir'] (mmengine): the replay's coverage
        'malloc': malloc, 'malloc_env': {k: v for k, v in os.environ.items() if k.startswith('MALLOC_')},
        'goals': goals,
    }
    rows = []
    for name, v in wall.items():
        net_name = 'conv64' if name == 'conv64' else 'dgunet' if name == 'dgunet' else 'interir'  # replays: InterIR's
        rows.append({'case': name, 'unit': 's', 'min': min(v), 'median': statistics.median(v), 'max': max(v),
                     'GMAC (mmengine)': macs[net_name] / 1e9,
                     'GMAC/s at median': macs[net_name] / statistics.median(v) / 1e9})
    for kind, table in (('wall', wall_ratios), ('process CPU', cpu_ratios)):
        for name, v in table.items():
            rows.append({'case': f'{name} [{kind} time]', 'unit': 'ratio', 'min': min(v),
                         'median': statistics.median(v), 'max': max(v), 'GMAC (mmengine)': '-',
                         'GMAC/s at median': f'goal {goals[name]}' if name in goals else '-'})
    emit('interir', results, rows, ['case', 'unit', 'min', 'median', 'max', 'GMAC (mmengine)', 'GMAC/s at median'])


if __name__ == '__main__':
    main()
