"""Restore an image or a folder of images with the shipped InterIR-S, or an option file's network (any size,
grey/RGBA/16-bit kept).

Without -opt the InterIR-S weights that ship with the package run (their SHA-256 checked before loading); -opt takes
an option file or pretrained:NAME. Output images keep the input's name, mode and bit depth: grey in -> grey out, RGBA
-> restored RGB plus the input's alpha untouched, 16-bit -> 16-bit. --maps also writes InterIR's physical maps (gain,
transmission, airlight, layer, streak) and the recogniser's decisions beside each output. Inputs are never
overwritten. See docs/tools.md.
"""


def add_arguments(parser):
    parser.add_argument('-opt', '--opt', default=None,
                        help='option YAML file (network_g, path.pretrain_network_g, val.tile/self_ensemble), or '
                             'pretrained:NAME for a shipped model (default: pretrained:InterIR-S)')
    parser.add_argument('--input', required=True, help='an image file, or a folder of images (not recursive)')
    parser.add_argument('--output', required=True, help='output folder (created; must not be the input folder)')
    parser.add_argument('--tile', type=int, default=None,
                        help="tile side for tiled inference of large images, 0 for whole images (default: the option "
                             "file's val.tile, the shipped model's tile)")
    parser.add_argument('--tile-overlap', type=int, default=None,
                        help='overlap of neighbouring tiles (default: the option file\'s val.tile_overlap, else 32)')
    parser.add_argument('--self-ensemble', action='store_true', default=None,
                        help='average over the 8 flips/rotations (slower, slightly better)')
    parser.add_argument('--maps', action='store_true',
                        help='also write the physical maps (PNG) and the recogniser\'s decisions (JSON) beside each '
                             'output (InterIR)')
    parser.add_argument('--device', default='auto', help='auto (CUDA if available), cpu or cuda[:i] (default: auto)')


def run(args):
    from interir_plugin.tools.console import user_errors
    from interir_plugin.tools.infer import infer

    with user_errors('infer'):
        result = infer(args.opt, args.input, args.output, tile=args.tile, tile_overlap=args.tile_overlap,
                       self_ensemble=args.self_ensemble, device=args.device, maps=args.maps)
    maps = f' and {len(result["maps"])} map file(s)' if args.maps else ''
    print(f'interir infer: wrote {len(result["images"])} image(s){maps} to {args.output}')
    return 0
