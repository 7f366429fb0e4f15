"""Show what the unfolding stages did to one image: one PNG figure plus the numbers as JSON.

InterIR: stage images with PSNR, the final step's physical maps (gain, transmission, airlight, additive and streak
layers), the active set 1 - Delta per step, the residual and step size, the recogniser's probabilities and this
image's expert mix and prior gates; with --category (and --renderers), the synthesiser's maps beside them as the
truth. A panel that would show a constant is left out (explain.json: skipped_panels). DGUNet/DGUNet+: stage images.
Weights come from the option file's path.pretrain_network_g (random, with a warning, if unset). See docs/tools.md.
"""


def add_arguments(parser):
    parser.add_argument('-opt', '--opt', required=True, help='option YAML file (network_g, path.pretrain_network_g)')
    parser.add_argument('--input', required=True, help='degraded image')
    parser.add_argument('--out', required=True, help='output folder (explain.png, explain.json, stage_XX.png)')
    parser.add_argument('--gt', default=None, help='clean image of the same size, for per-stage PSNR (optional)')
    parser.add_argument('--max-side', type=int, default=512,
                        help='downscale larger inputs to this longer side first (default: 512; 0 keeps the size)')
    parser.add_argument('--category', default=None,
                        help='CDD-11 category: --input is a clean image, synthesised into this category; the figure '
                             'shows the synthesiser\'s physical maps beside the network\'s quantities')
    parser.add_argument('--renderers', nargs='+', default=None, metavar='DEGRADATION=RENDERER',
                        help='with --category: the formation model of a component, e.g. haze=fog rain=occluding '
                             '(docs/data.md, "Renderers"; default: the original ones)')
    parser.add_argument('--seed', type=int, default=0, help='synthesis seed with --category (default: 0)')
    parser.add_argument('--device', default='auto', help='auto (CUDA if available), cpu or cuda[:i] (default: auto)')


def parse_renderers(items):
    """``['haze=fog', ...]`` -> ``{'haze': 'fog', ...}`` (None for None); a malformed item is named."""
    if items is None:
        return None
    out = {}
    for item in items:
        name, sep, renderer = item.partition('=')
        if not sep or not name or not renderer:
            raise ValueError(f'--renderers {item!r}: expected DEGRADATION=RENDERER, e.g. haze=fog')
        out[name] = renderer
    return out


def run(args):
    from interir_plugin.tools.console import user_errors
    from interir_plugin.tools.explain import explain

    with user_errors('explain'):
        result = explain(args.opt, args.input, args.out, gt_path=args.gt, device=args.device,
                         max_side=args.max_side or None, category=args.category, seed=args.seed,
                         renderers=parse_renderers(args.renderers))
    print(f'interir explain: {result["png"]} and {result["json"]} written')
    return 0
