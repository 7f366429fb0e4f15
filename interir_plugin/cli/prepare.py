"""Prepare data: the embedded MiniCDD, meta-info lists, LMDBs, composite sets synthesised from clean images.

  interir prepare minicdd --out datasets/MiniCDD [--seed 0]
  interir prepare meta --root datasets/MiniCDD --out datasets_meta/minicdd
  interir prepare lmdb --root datasets/MiniCDD --out datasets/MiniCDD_lmdb
  interir prepare synth --input my_clean_photos --out datasets/MyCDD --categories low haze low_haze

Nothing existing is overwritten without --force.
"""
import argparse

from interir_plugin.data import preparation
from interir_plugin.data.degradations import CDD11_CATEGORIES


def add_arguments(parser):
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    sub = parser.add_subparsers(dest='what', metavar='WHAT', required=True)
    p = sub.add_parser('minicdd', help='build the embedded MiniCDD (CDD-11 layout) from scikit-image photos')
    p.add_argument('--out', required=True, help='output folder, e.g. datasets/MiniCDD')
    p.add_argument('--seed', type=int, default=0, help='synthesis seed (default 0)')
    p = sub.add_parser('meta', help='write BasicSR meta-info lists for every image folder of a data set')
    p.add_argument('--root', required=True, help='data-set root to scan')
    p.add_argument('--out', required=True, help='folder of the lists, e.g. datasets_meta/<name>')
    p = sub.add_parser('lmdb', help="one LMDB per image folder (BasicSR's make_lmdb_from_imgs)")
    p.add_argument('--root', required=True, help='data-set root to convert')
    p.add_argument('--out', required=True, help='output root (<out>/<folder>.lmdb)')
    p = sub.add_parser('synth', help='a CDD-11-layout composite set from a folder of clean images')
    p.add_argument('--input', required=True, help='folder of clean images')
    p.add_argument('--out', required=True, help='output folder (gets clear/ and one folder per category)')
    p.add_argument('--categories', nargs='+', default=list(CDD11_CATEGORIES), choices=CDD11_CATEGORIES,
                   metavar='CATEGORY', help='CDD-11 categories to synthesise (default: all 11)')
    p.add_argument('--seed', type=int, default=0, help='synthesis seed (default 0)')
    for p in sub.choices.values():
        p.add_argument('--force', action='store_true', help='replace existing output')


def run(args):
    try:
        if args.what == 'minicdd':
            manifest = preparation.make_minicdd(args.out, args.seed, args.force)
            counts = {s: len(v['images']) for s, v in manifest['splits'].items()}
            print(f'MiniCDD written to {args.out}: {counts} images per category (seed {args.seed})')
        elif args.what == 'meta':
            written = preparation.write_meta(args.root, args.out, args.force)
            print('\n'.join(f'wrote {p}' for p in written))
        elif args.what == 'lmdb':
            written = preparation.make_lmdbs(args.root, args.out, args.force)
            print('\n'.join(f'wrote {p}' for p in written))
        else:
            n = preparation.synth_folder(args.input, args.out, tuple(args.categories), args.seed, args.force)
            print(f'{n} clean images x {len(args.categories)} categories written to {args.out}')
    except (preparation.OverwriteError, FileNotFoundError, ValueError, OSError, ImportError) as err:
        raise SystemExit(f'interir prepare {args.what}: {err}') from err
    return 0
