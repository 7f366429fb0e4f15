"""Parameters, multiply-adds, latency and peak memory of an option file's network, printed as JSON.

Works for every arch in BasicSR's registry (the plugin's and BasicSR's own). The network has random weights:
its cost does not depend on them. See docs/tools.md.
"""
import json


def add_arguments(parser):
    parser.add_argument('-opt', '--opt', required=True, help='option YAML file (its network_g is profiled)')
    parser.add_argument('--size', type=int, nargs=2, default=(256, 256), metavar=('H', 'W'),
                        help='input height and width (default: 256 256); channels come from network_g')
    parser.add_argument('--device', default='auto', help='auto (CUDA if available), cpu or cuda[:i] (default: auto)')
    parser.add_argument('--repeats', type=int, default=10, help='timed forward passes (default: 10)')
    parser.add_argument('--warmup', type=int, default=2, help='untimed forward passes first (default: 2)')
    parser.add_argument('--no-memory', dest='memory', action='store_false', help='skip the peak-memory pass')


def run(args):
    from interir_plugin.tools.console import user_errors
    from interir_plugin.tools.profile import profile_option_file

    with user_errors('profile'):
        result = profile_option_file(args.opt, tuple(args.size), args.device, args.repeats, args.warmup, args.memory)
    print(json.dumps(result, indent=1))
    return 0
