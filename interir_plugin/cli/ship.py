"""Pack a trained checkpoint as the weights of a shipped model (maintainers): file, SHA-256 and manifest entry.

Loads the checkpoint into the network of the manifest entry (interir_plugin/weights/manifest.yml, or the folder
named by $INTERIR_WEIGHTS_DIR), writes it in the entry's precision beside the manifest, records its SHA-256 (and
--iterations, --train-seconds) in the entry and loads it back as users will. See docs/tools.md, "Shipped weights".
"""


def add_arguments(parser):
    parser.add_argument('--checkpoint', required=True,
                        help='training checkpoint, e.g. experiments/<run>/models/net_g_latest.pth')
    parser.add_argument('--name', default='InterIR-S', help='manifest entry to fill (default: InterIR-S)')
    parser.add_argument('--param-key', default='params',
                        help="checkpoint entry holding the weights: params, params_ema, or 'none' for a bare state "
                             'dict (default: params)')
    parser.add_argument('--dtype', choices=('float16', 'float32'), default=None,
                        help="stored precision (default: the entry's dtype)")
    parser.add_argument('--iterations', type=int, default=None, help='training iterations of the run, recorded')
    parser.add_argument('--train-seconds', type=float, default=None, help='training seconds of the run, recorded')


def run(args):
    from interir_plugin.tools.console import user_errors
    from interir_plugin.tools.ship import ship

    with user_errors('ship'):
        result = ship(args.checkpoint, args.name, None if args.param_key == 'none' else args.param_key, args.dtype,
                      args.iterations, args.train_seconds)
    print(f'interir ship: wrote {result["file"]} ({result["bytes"]} bytes, {result["dtype"]}), sha256 '
          f'{result["sha256"]} recorded in the manifest; output change against the checkpoint on a fixed 64 x 64 '
          f'input: {result["max_output_change"]:.2e} (of 1)')
    return 0
