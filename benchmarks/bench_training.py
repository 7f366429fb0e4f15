"""Training step of InterIR-S and DGUNet-S side by side at 1 and 2 threads (batch 4, 96x96, one full
UnfoldingRestorationModel step: forward, multi-stage loss, backward, optimizer), and the peak memory of tiled
inference on a 4096x4096 image on the CPU (measured in a child process, VmHWM).

    OMP_WAIT_POLICY=PASSIVE .venv/bin/python benchmarks/bench_training.py [--repeats 5] [--threads 2,1]
        [--baseline REF] [--skip-memory] [--tile 512] [--quick]

Every case (network x thread count, and with ``--baseline REF`` the same networks with the EConv module of git
revision REF) is timed once per round, in turn (``_common.interleaved``), so the ratios it prints (InterIR-S over
DGUNet-S at each thread count, 2 threads over 1 thread for each network, baseline over current) come from steps
timed side by side. The 1-minute load average is printed with the figures: on a machine shared with other jobs,
every parallel region of a 2-thread run waits for the second thread to be scheduled, and networks made of many
small operators (InterIR-S: thousands per step) pay that wait thousands of times.
"""
import argparse
import json
import os
import resource
import subprocess
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import add_quick_flag, emit, interleaved, set_threads, spread  # noqa: E402

import interir_plugin  # noqa: E402,F401  (shims and registration)
from interir_plugin.data.degradations import CDD11_CATEGORIES  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
#: network_g of the two smoke configurations (options/train/*/train_*-S_MiniCDD_smoke.yml).
NETS = {
    'InterIR-S': 'options/train/InterIR/train_InterIR-S_MiniCDD_smoke.yml',
    'DGUNet-S': 'options/train/DGUNet/train_DGUNet-S_MiniCDD_smoke.yml',
}


#: ``--quick``: one stage of each network (mmengine's count and a step of the full smoke nets take long).
QUICK_NETS = {'InterIR-S': {'num_stages': 1}, 'DGUNet-S': {'depth': 1}}


def _options(name, val=None, quick=False):
    """A CPU training option dict with the network and losses of the smoke configuration of ``name`` (``quick``:
    shrunk by :data:`QUICK_NETS`)."""
    import yaml

    with open(os.path.join(REPO, NETS[name])) as f:
        smoke = yaml.safe_load(f)
    train = {k: v for k, v in smoke['train'].items()}
    train['optim_g'] = dict(train['optim_g'])
    train['scheduler'] = dict(train['scheduler'])
    return {'name': f'bench_{name}', 'model_type': 'UnfoldingRestorationModel', 'num_gpu': 0, 'dist': False,
            'rank': 0, 'world_size': 1, 'is_train': val is None,
            'network_g': {**smoke['network_g'], **(QUICK_NETS[name] if quick else {})},
            'path': {'pretrain_network_g': None, 'strict_load_g': True},
            **({'train': train} if val is None else {}),
            'val': val or {'val_freq': 1, 'save_img': False}}


def _batch(batch, size):
    gen = torch.Generator().manual_seed(0)
    gt = torch.rand(batch, 3, size, size, generator=gen)
    labels = [CDD11_CATEGORIES[i % len(CDD11_CATEGORIES)] for i in range(batch)]  # InterIR's presence gates learn
    return {'lq': (gt + 0.1 * torch.randn(gt.shape, generator=gen)).clamp(0, 1), 'gt': gt, 'label_name': labels}


#: what ``--baseline`` swaps: the methods of these classes of :mod:`interir_plugin.archs.econv`.
SWAPPED = {'EConv': ('route', 'kernels', 'forward'), 'ChannelAttention': ('forward',), 'FrequencyBranch': ('forward',)}


def econv_methods(ref=None):
    """The :data:`SWAPPED` methods of ``interir_plugin/archs/econv.py`` as of git revision ``ref`` (None: the
    working tree's), as ``{(class name, method): function}``. Parameters and buffers must be those of the working
    tree's classes (the swap replaces code, not modules)."""
    import importlib.util
    import tempfile

    from interir_plugin.archs import econv

    module = econv
    if ref is not None:
        source = subprocess.run(['git', 'show', f'{ref}:interir_plugin/archs/econv.py'], cwd=REPO, check=True,
                                capture_output=True, text=True).stdout
        with tempfile.NamedTemporaryFile('w', suffix='.py', delete=False) as f:
            f.write(source)
        spec = importlib.util.spec_from_file_location(f'econv_{ref}', f.name)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        os.unlink(f.name)
    return {(cls, name): getattr(getattr(module, cls), name) for cls, names in SWAPPED.items() for name in names}


def _use(methods):
    from interir_plugin.archs import econv

    for (cls, name), fn in methods.items():
        setattr(getattr(econv, cls), name, fn)


def train_steps(batch, size, repeats, threads, baseline=None, quick=False):
    """Time one training step of every network of :data:`NETS` at every count of ``threads`` (and, for InterIR-S,
    with the EConv code of revision ``baseline``), interleaved; returns ``(results, rows)``."""
    from basicsr.models import build_model
    from mmengine.logging import MMLogger

    from interir_plugin.utils.complexity import model_complexity

    data = _batch(batch, size)
    current = econv_methods()
    versions = {'': current}
    if baseline:
        versions[f' ({baseline})'] = econv_methods(baseline)
    cases, info = {}, {}
    for name in NETS:
        model = build_model(_options(name, quick=quick))
        it = [0]
        for tag, methods in versions.items():
            if tag and not name.startswith('InterIR'):
                continue
            for n in threads:
                def step(model=model, n=n, methods=methods, it=it):
                    _use(methods)
                    torch.set_num_threads(n)
                    it[0] += 1
                    model.feed_data(data)
                    model.optimize_parameters(it[0])

                cases[f'{name}{tag} @{n}'] = step
        info[name] = model.get_bare_model(model.net_g)
    try:
        wall, cpu = interleaved(cases, repeats, warmup=1)
    finally:
        _use(current)
        torch.set_num_threads(threads[0])
    MMLogger.get_current_instance().setLevel('ERROR')  # keep the counter's operator warnings out of the JSON
    results, rows = {'steps': {}, 'ratios': {}}, []
    for name, net in info.items():
        count = model_complexity(net, (3, size, size))
        info[name] = {'params': count['params'], 'gmacs_per_image': count['gmacs']}
    for case in cases:
        name, n = case.split(' ')[0], int(case.rsplit('@', 1)[1])
        t = spread(wall[case])
        results['steps'][case] = {**info[name], 'threads': n, 'seconds_per_step': t,
                                  'cpu_seconds_per_step': spread(cpu[case])}
        rows.append({'case': case, 'params (M)': info[name]['params'] / 1e6,
                     'GMACs/img': info[name]['gmacs_per_image'], 's/step (median)': t['median'],
                     'min': t['min'], 'max': t['max'], 'CPU s/step': spread(cpu[case])['median']})
    med = {case: results['steps'][case]['seconds_per_step']['median'] for case in cases}
    first, second = NETS
    for n in threads:
        results['ratios'][f'{second} / {first} @{n}'] = med[f'{second} @{n}'] / med[f'{first} @{n}']
    if 1 in threads and 2 in threads:
        for case in cases:
            if case.endswith(' @2'):
                base = case[:-len(' @2')]
                results['ratios'][f'{base}: 2 threads / 1 thread'] = med[case] / med[f'{base} @1']
    for tag in versions:
        if tag:
            for n in threads:
                results['ratios'][f'{first}{tag} / {first} @{n}'] = med[f'{first}{tag} @{n}'] / med[f'{first} @{n}']
    return results, rows


def peak_rss_mib():
    """Peak resident memory of this process in MiB: ``VmHWM`` (Linux), else ``ru_maxrss``. ``ru_maxrss`` alone is wrong
    in a child process: Linux carries the parent's peak over fork + exec."""
    try:
        with open('/proc/self/status') as f:
            for line in f:
                if line.startswith('VmHWM:'):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def _child_tiled_inference(name, size, tile, overlap, threads, quick=False):
    """Run in a child process: tiled inference on a ``size`` x ``size`` image; print JSON with the peak RSS."""
    from basicsr.models import build_model

    set_threads(threads)
    model = build_model(_options(name, val={'val_freq': 1, 'save_img': False, 'tile': tile,
                                            'tile_overlap': overlap}, quick=quick))
    lq = torch.rand(1, 3, size, size)
    model.feed_data({'lq': lq})
    base = peak_rss_mib()
    t0 = time.perf_counter()
    model.test()
    seconds = time.perf_counter() - t0
    assert model.output.shape == lq.shape and torch.isfinite(model.output).all()
    peak = peak_rss_mib()
    print(json.dumps({'peak_rss_mib': peak, 'rss_before_inference_mib': base, 'seconds': seconds}))


def tiled_memory(name, size, tile, overlap, threads, quick=False):
    code = (f'import sys; sys.path.insert(0, {os.path.dirname(os.path.abspath(__file__))!r}); '
            f'import bench_training as b; '
            f'b._child_tiled_inference({name!r}, {size}, {tile}, {overlap}, {threads}, {quick})')
    out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, cwd=REPO,
                         env={**os.environ, 'OMP_NUM_THREADS': str(threads)})
    if out.returncode:
        raise RuntimeError(out.stderr[-3000:])
    return json.loads(out.stdout.strip().splitlines()[-1])


def main():
    from interir_plugin.utils.tables import markdown_table

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--repeats', type=int, default=5, help='timed rounds (each times every case once)')
    parser.add_argument('--batch', type=int, default=4)
    parser.add_argument('--size', type=int, default=96)
    parser.add_argument('--threads', default='2,1',
                        help='comma-separated torch thread counts, each timed in every round (default: 2,1)')
    parser.add_argument('--baseline', default=None,
                        help='git revision whose interir_plugin/archs/econv.py InterIR-S also runs (before/after)')
    parser.add_argument('--image', type=int, default=4096, help='side of the tiled-inference image')
    parser.add_argument('--tile', type=int, default=512)
    parser.add_argument('--overlap', type=int, default=32)
    parser.add_argument('--skip-memory', action='store_true', help='only the training steps')
    add_quick_flag(parser)
    args = parser.parse_args()
    threads = [int(n) for n in args.threads.split(',')]
    if args.quick:
        args.repeats, args.batch, args.size, args.image, args.tile, args.overlap = 1, 1, 32, 256, 128, 16
    if args.repeats < 1 or not threads or min(threads) < 1:
        parser.error('--repeats and every --threads count must be >= 1')
    set_threads(threads[0])
    results = {'tiled_inference': {}}
    if not args.skip_memory:  # first, in a child process
        r = tiled_memory('InterIR-S', args.image, args.tile, args.overlap, threads[0], args.quick)
        results['tiled_inference']['InterIR-S'] = {**r, 'image': args.image, 'tile': args.tile,
                                                   'overlap': args.overlap, 'goal_mib': 4096}
    steps, rows = train_steps(args.batch, args.size, args.repeats, threads, args.baseline, args.quick)
    results.update(steps)
    emit('training', {'batch': args.batch, 'size': args.size, 'load_average': os.getloadavg(), **results}, rows,
         ['case', 'params (M)', 'GMACs/img', 's/step (median)', 'min', 'max', 'CPU s/step'])
    print()
    print('\n'.join(markdown_table(['ratio', 'value'], [[k, f'{v:.3g}'] for k, v in results['ratios'].items()])))
    if not args.skip_memory:
        r = results['tiled_inference']['InterIR-S']
        print()
        print('\n'.join(markdown_table(['tiled inference', 'peak RSS (MiB)', 'seconds'],
                                       [[f'{args.image}^2 InterIR-S (tile {args.tile})', f"{r['peak_rss_mib']:.0f}",
                                         f"{r['seconds']:.1f}"]])))


if __name__ == '__main__':
    main()
