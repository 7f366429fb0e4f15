"""Training throughput of InterIR-S and a DGUNet of similar parameter count, side by side (batch 4, 128x128,
2 threads, one full UnfoldingRestorationModel step: forward, multi-stage loss, backward, optimizer), and the peak
memory of tiled inference on a 4096x4096 image on the CPU (measured in a child process, maxrss).

    .venv/bin/python benchmarks/bench_training.py [--repeats 5] [--tile 512] [--skip-memory] [--threads 2] [--quick]

The 1-minute load average is printed with the figures: on a machine shared with other jobs, two torch threads
contend for the cores and fine-grained networks (DGUNet) slow down several times more than coarse ones.
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
from _common import add_quick_flag, emit, set_threads, timeit  # noqa: E402

import interir_plugin  # noqa: E402,F401  (shims and registration)

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


def train_throughput(name, batch, size, repeats, quick=False):
    from basicsr.models import build_model

    from interir_plugin.utils.complexity import model_complexity

    model = build_model(_options(name, quick=quick))
    gen = torch.Generator().manual_seed(0)
    gt = torch.rand(batch, 3, size, size, generator=gen)
    data = {'lq': (gt + 0.1 * torch.randn(gt.shape, generator=gen)).clamp(0, 1), 'gt': gt}
    it = [0]

    def step():
        it[0] += 1
        model.feed_data(data)
        model.optimize_parameters(it[0])

    times = timeit(step, repeats=repeats, warmup=1)
    from mmengine.logging import MMLogger

    MMLogger.get_current_instance().setLevel('ERROR')  # keep the counter's operator warnings out of the JSON
    info = model_complexity(model.get_bare_model(model.net_g), (3, size, size))
    return {'params': info['params'], 'gmacs_per_image': info['gmacs'], 'seconds_per_iter': times,
            'iters_per_s': 1.0 / times['median']}


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
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--repeats', type=int, default=5, help='timed training steps per network (>= 5)')
    parser.add_argument('--batch', type=int, default=4)
    parser.add_argument('--size', type=int, default=128)
    parser.add_argument('--image', type=int, default=4096, help='side of the tiled-inference image')
    parser.add_argument('--tile', type=int, default=512)
    parser.add_argument('--overlap', type=int, default=32)
    parser.add_argument('--skip-memory', action='store_true', help='only the training throughput')
    parser.add_argument('--threads', type=int, default=2, help='torch threads (the reference machine: 2)')
    add_quick_flag(parser)
    args = parser.parse_args()
    if args.quick:
        args.repeats, args.batch, args.size, args.image, args.tile, args.overlap = 1, 1, 32, 256, 128, 16
    set_threads(args.threads)
    results, rows = {'training': {}, 'tiled_inference': {}}, []
    if not args.skip_memory:  # first, in a child process
        r = tiled_memory('InterIR-S', args.image, args.tile, args.overlap, args.threads, args.quick)
        results['tiled_inference']['InterIR-S'] = {**r, 'image': args.image, 'tile': args.tile,
                                                   'overlap': args.overlap, 'goal_mib': 4096}
    for name in NETS:
        r = train_throughput(name, args.batch, args.size, args.repeats if args.quick else max(args.repeats, 5),
                             args.quick)
        results['training'][name] = r
        rows.append({'what': f'train {name}', 'params (M)': r['params'] / 1e6, 'GMACs/img': r['gmacs_per_image'],
                     'it/s': r['iters_per_s'], 's/it (median)': r['seconds_per_iter']['median'],
                     'peak RSS (MiB)': '', 'seconds': ''})
    first, second = (results['training'][n]['iters_per_s'] for n in NETS)
    results['training']['ratio_interir_s_over_dgunet_s'] = first / second
    if not args.skip_memory:
        r = results['tiled_inference']['InterIR-S']
        rows.append({'what': f'tiled {args.image}^2 InterIR-S (tile {args.tile})', 'params (M)': '',
                     'GMACs/img': '', 'it/s': '', 's/it (median)': '', 'peak RSS (MiB)': r['peak_rss_mib'],
                     'seconds': r['seconds']})
    emit('training', {'batch': args.batch, 'size': args.size, 'load_average': os.getloadavg(), **results}, rows,
         ['what', 'params (M)', 'GMACs/img', 'it/s', 's/it (median)', 'peak RSS (MiB)', 'seconds'])


if __name__ == '__main__':
    main()
