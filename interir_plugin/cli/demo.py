"""The main job on the embedded default: build MiniCDD, train InterIR-S, DGUNet-S and BasicSR's RIDNet for the same
wall-clock budget each, score them.

Trains each model with BasicSR's trainer from its shipped MiniCDD recipe for --budget seconds, draws their
learning curves on held-out images, tests all of them and the degraded input on the MiniCDD test split and on its
leave-one-renderer-out test split (renderers training never saw), and writes a leaderboard (markdown, CSV, PNG; PSNR,
SSIM and harm rate per label), the learning curves, an InterIR explain figure and its audit to --out. About 6 minutes
on 2 CPU cores with the default budget; uses a GPU if one is present. MiniCDD goes to ./datasets/MiniCDD.
See docs/tools.md.
"""


def add_arguments(parser):
    parser.add_argument('--out', default='interir_demo', help='output folder (default: interir_demo)')
    parser.add_argument('--device', default='auto', help='auto (CUDA if available), cpu or cuda[:i] (default: auto)')
    parser.add_argument('--budget', type=float, default=None,
                        help='training seconds per model (default: interir_plugin.tools.demo.DEFAULT_BUDGET)')
    parser.add_argument('--threads', type=int, default=None,
                        help='torch threads for training and scoring (default: interir_plugin.tools.demo.'
                             'DEFAULT_THREADS, 1: every model gets the same core)')
    parser.add_argument('--quick', action='store_true',
                        help='same steps with 2 s of training and a few test images: checks the wiring in about a '
                             'minute; its numbers mean nothing')


def run(args):
    import os
    import subprocess
    import sys

    from interir_plugin.tools.console import user_errors
    from interir_plugin.tools.demo import DEFAULT_BUDGET, DEFAULT_THREADS, demo

    if 'OMP_WAIT_POLICY' not in os.environ:
        # OpenMP reads the variable once, when torch is imported: run the demo in a child process that has it. With
        # torch's default, its threads spin-wait, and on a CPU shared with anything else each small operation
        # waits for a descheduled thread (InterIR-S forward 20 s instead of 0.3 s; docs/tools.md, "Speed").
        # Set OMP_WAIT_POLICY yourself (ACTIVE keeps the default) to run in this process.
        command = [sys.executable, '-m', 'interir_plugin', 'demo', '--out', args.out, '--device', args.device]
        command += ['--budget', str(args.budget)] if args.budget is not None else []
        command += ['--threads', str(args.threads)] if args.threads is not None else []
        return subprocess.call(command + (['--quick'] if args.quick else []),
                               env={**os.environ, 'OMP_WAIT_POLICY': 'PASSIVE'})
    with user_errors('demo'):
        result = demo(args.out, quick=args.quick, device=args.device,
                      budget=DEFAULT_BUDGET if args.budget is None else args.budget,
                      threads=DEFAULT_THREADS if args.threads is None else args.threads)
    board, secs = result['leaderboard'], result['seconds']
    print()
    print(board['markdown'])
    print('Means over labels on both scored splits (test: our renderers; loro_test: renderers training never saw):\n')
    print('\n'.join(result['means']))
    print()
    print(f'interir demo finished in {secs["total"]:.0f} s' + (' (--quick: the numbers mean nothing)' if args.quick
                                                               else ''))
    print(f'  leaderboard: {board["md"]}, {board["csv"]}, {board["png"]}')
    print(f'  curves:      {result["curve"]["png"]}, {result["curve"]["csv"]}')
    print(f'  explain:     {result["explain"]["png"]}, {result["explain"]["json"]}')
    print(f'  audit:       {result["audit"]["md"]}, {result["audit"]["png"]}, {result["audit"]["json"]}')
    print(f'  trained:     {args.out}/experiments/   test options: {args.out}/options/   log: {result["log"]}')
    print('  time:        ' + ', '.join(f'{k} {v:.0f} s' for k, v in secs.items() if k != 'total'))
    return 0
