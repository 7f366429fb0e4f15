"""Show what the unfolding stages did to one image: one PNG figure plus the numbers as JSON.

InterIR: stage images, data-fidelity residual per stage, active-set maps, expert-mix (alpha) and prior-gate
(gamma) bars, P and Q heat maps; with --category, the synthesiser's physical maps (and the network's
estimates). DGUNet/DGUNet+: stage images. Weights come from the option file's path.pretrain_network_g (random,
with a warning, if unset). See docs/tools.md.
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
    parser.add_argument('--seed', type=int, default=0, help='synthesis seed with --category (default: 0)')
    parser.add_argument('--device', default='auto', help='auto (CUDA if available), cpu or cuda[:i] (default: auto)')


def run(args):
    from interir_plugin.tools.console import user_errors
    from interir_plugin.tools.explain import explain

    with user_errors('explain'):
        result = explain(args.opt, args.input, args.out, gt_path=args.gt, device=args.device,
                         max_side=args.max_side or None, category=args.category, seed=args.seed)
    print(f'interir explain: {result["png"]} and {result["json"]} written')
    return 0
