"""Test what the network's interpretable quantities claim, as numbers: audit.json, audit.md and audit.png.

A folder of clean images is synthesised into every category (with --seed), with the synthesiser's physical maps;
a CDD-11-layout folder (clear/ + category folders) is read as it is, without the map-based figures; a protocol's
splits (--split, default test; patterns such as 'heldout_*' read several) as stored or synthesised. Reports stage
PSNR and harm rate, data-fidelity residual, routing accuracy, AUCs and routing per label, active-set AUCs, the
routing intervention, the physical maps' errors, and the recogniser's accuracy and calibration per renderer. See
docs/audit.md.
"""


def add_arguments(parser):
    parser.add_argument('-opt', '--opt', required=True, help='option YAML file (network_g, path.pretrain_network_g)')
    parser.add_argument('--data', required=True,
                        help='folder of clean images, CDD-11-layout folder (clear/ + categories) or protocol')
    parser.add_argument('--out', required=True, help='output folder (audit.json, audit.md, audit.png)')
    parser.add_argument('--categories', nargs='+', default=None,
                        help='CDD-11 categories to synthesise, or labels to keep of a labelled set (default: all)')
    parser.add_argument('--split', nargs='+', default=None,
                        help='protocol split(s) to read: names or patterns, e.g. heldout (minicdd_loro) or '
                             '"heldout_*" (every per-renderer split of minicdd_renderers) (default: test)')
    parser.add_argument('--seed', type=int, default=0, help='synthesis seed (default: 0)')
    parser.add_argument('--max-images', type=int, default=None,
                        help='at most this many clean images (or images per label), first in sorted order')
    parser.add_argument('--max-side', type=int, default=256,
                        help='centre-crop images to at most this side (default: 256; 0 keeps the size)')
    parser.add_argument('--device', default='auto', help='auto (CUDA if available), cpu or cuda[:i] (default: auto)')


def run(args):
    from interir_plugin.tools.audit import audit
    from interir_plugin.tools.console import user_errors

    with user_errors('audit'):
        result = audit(args.opt, args.data, args.out, categories=args.categories, seed=args.seed,
                       device=args.device, max_images=args.max_images, max_side=args.max_side or None,
                       split=args.split)
    print(result['headline'])
    print(f'interir audit: {result["json"]}, {result["md"]} and {result["png"]} written')
    return 0
