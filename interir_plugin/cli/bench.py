"""Test several option files (and shipped models) with BasicSR and write one leaderboard (per-label PSNR/SSIM, harm
rate, params, MACs, latency).

Each option file is tested with BasicSR's test pipeline through UnfoldingRestorationModel (zoo archs such as
SwinIR or RIDNet included), or its results/<name>/metrics CSV is reused; -opt pretrained:NAME adds a model whose
weights ship with the package, scored on --data or on the first option file's datasets; the degraded input is
scored as a baseline. Writes leaderboard.md, leaderboard.csv and leaderboard.png to --out. See docs/tools.md.
"""


def add_arguments(parser):
    parser.add_argument('-opt', '--opt', action='append', required=True, metavar='YML',
                        help='test option file, or pretrained:NAME for a shipped model (e.g. pretrained:InterIR-S); '
                             'repeat for each model (-opt A.yml -opt B.yml ...)')
    parser.add_argument('--data', action='append', default=None, metavar='DIR_OR_PROTOCOL:SPLIT',
                        help='test data of the shipped models: a CDD-11-layout folder or PROTOCOL:SPLIT (e.g. '
                             'minicdd_loro:test); repeatable; PSNR and SSIM (default: the datasets and metrics of the '
                             'first option file)')
    parser.add_argument('--out', default='bench', help='folder of the leaderboard files (default: bench)')
    parser.add_argument('--rerun', action='store_true', help='test again even where results/<name>/ has metrics')
    parser.add_argument('--no-identity', dest='identity', action='store_false',
                        help='leave out the degraded-input baseline row')
    parser.add_argument('--device', default='auto', help='auto (CUDA if available), cpu or cuda[:i] (default: auto)')
    parser.add_argument('-v', '--verbose', action='store_true', help="show BasicSR's log (always in OUT/bench.log)")
    parser.add_argument('--repeats', type=int, default=5, help='timed forward passes for latency (default: 5)')


def run(args):
    from interir_plugin.tools.bench import bench
    from interir_plugin.tools.console import user_errors

    with user_errors('bench'):
        result = bench(args.opt, args.out, rerun=args.rerun, identity=args.identity, device=args.device,
                       repeats=args.repeats, verbose=args.verbose, data=args.data)
    print(result['markdown'])
    print(f'\ninterir bench: leaderboard written to {result["md"]}, {result["csv"]} and {result["png"]}')
    return 0
