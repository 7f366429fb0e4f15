"""The main job on the embedded default: build MiniCDD, train InterIR-S, DGUNet-S and BasicSR's RIDNet, score them.

Trains each model with BasicSR's trainer from its shipped option file, tests all of them and the degraded input
on the MiniCDD test split, and writes a leaderboard (markdown, CSV, PNG) and an InterIR explain figure to --out.
About 5-7 minutes on 2 CPU cores; uses a GPU if one is present. MiniCDD goes to ./datasets/MiniCDD.
See docs/tools.md.
"""


def add_arguments(parser):
    parser.add_argument('--out', default='interir_demo', help='output folder (default: interir_demo)')
    parser.add_argument('--device', default='auto', help='auto (CUDA if available), cpu or cuda[:i] (default: auto)')
    parser.add_argument('--quick', action='store_true',
                        help='same steps with a few iterations and test images: checks the wiring in about a '
                             'minute; its numbers mean nothing')


def run(args):
    from interir_plugin.tools.console import user_errors
    from interir_plugin.tools.demo import demo

    with user_errors('demo'):
        result = demo(args.out, quick=args.quick, device=args.device)
    board, secs = result['leaderboard'], result['seconds']
    print()
    print(board['markdown'])
    print(f'interir demo finished in {secs["total"]:.0f} s' + (' (--quick: the numbers mean nothing)' if args.quick
                                                               else ''))
    print(f'  leaderboard: {board["md"]}, {board["csv"]}, {board["png"]}')
    print(f'  explain:     {result["explain"]["png"]}, {result["explain"]["json"]}')
    print(f'  trained:     {args.out}/experiments/   test options: {args.out}/options/   log: {result["log"]}')
    print('  time:        ' + ', '.join(f'{k} {v:.0f} s' for k, v in secs.items() if k != 'total'))
    return 0
