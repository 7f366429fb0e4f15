"""The tile-size table: PSNR of a trained network on whole test images and on tiles of several sizes.

    OMP_WAIT_POLICY=PASSIVE .venv/bin/python benchmarks/bench_tiles.py -opt OPTION.yml --data ROOT
        [--tiles 64,96,128,256] [--overlap 32] [--categories low,haze] [--max-images N] [--threads 2] [--quick]

``OPTION.yml`` is any option file with ``network_g`` and ``path.pretrain_network_g`` (e.g. a test file of
``options/test/``); ``ROOT`` is a folder in the CDD-11 layout (``clear/`` and one folder per category, e.g.
``datasets/MiniCDD/test``). Every image is restored through ``UnfoldingRestorationModel.test`` (padding to the
network's size multiple and ``tiled_apply``, exactly what validation and ``interir infer`` do) once as a whole and
once per tile size, with ``tile_overlap = min(--overlap, tile // 2)``. PSNR is BasicSR's (8-bit, RGB, no border
crop), averaged per category; the headline is the mean over categories, as in validation. A tile at least as large
as an image restores it whole (one tile); the table counts how many images were really tiled.

InterIR's P and Q are ``h x h`` and ``w x w`` at the tile's size, its frequency branches transform the whole tile
and its EConv routing pools the whole tile, so the output depends on the tile size by design (see
tests/test_tiling.py); this table measures by how much, for a trained model. ``--quick`` builds a random
small InterIR checkpoint and a tiny CDD-11 folder in a temporary directory (tests/test_benchmarks.py).
"""
import argparse
import os
import sys
import tempfile
import time

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import add_quick_flag, emit, set_threads  # noqa: E402

import interir_plugin  # noqa: E402,F401  (shims and registration)

DEFAULT_TILES = (64, 96, 128, 256)


def _read(path):
    from interir_plugin.utils.images import decode_image

    with open(path, 'rb') as f:
        bgr = decode_image(f.read(), path)
    return torch.from_numpy(np.ascontiguousarray(bgr[..., ::-1].transpose(2, 0, 1)))[None]  # 1 x 3 x H x W RGB


def cdd11_pairs(root, categories=None, max_images=None):
    """``(category, name, lq path, gt path)`` of a CDD-11-layout folder, sorted; categories absent from ``root``
    are skipped (an explicitly requested one that is absent raises)."""
    from interir_plugin.data.preparation import CDD11_CATEGORIES
    from interir_plugin.utils.images import is_image_file

    wanted = categories or [c for c in CDD11_CATEGORIES if os.path.isdir(os.path.join(root, c))]
    clear = os.path.join(root, 'clear')
    if not os.path.isdir(clear) or not wanted:
        raise FileNotFoundError(f'{root}: not a CDD-11 layout (needs clear/ and category folders)')
    pairs = []
    for category in wanted:
        folder = os.path.join(root, category)
        if not os.path.isdir(folder):
            raise FileNotFoundError(f'{folder}: category folder not found')
        names = sorted(n for n in os.listdir(folder) if is_image_file(n))[:max_images]
        for name in names:
            gt = os.path.join(clear, name)
            if not os.path.isfile(gt):
                raise FileNotFoundError(f'{gt}: no clean image for {os.path.join(folder, name)}')
            pairs.append((category, name, os.path.join(folder, name), gt))
    return pairs


def tile_table(model, pairs, tiles=DEFAULT_TILES, overlap=32):
    """PSNR per category of ``model`` on ``pairs`` restored whole and with every tile size of ``tiles``.

    Args:
        model (UnfoldingRestorationModel): Test-mode model (its ``tile``/``tile_overlap`` are set here and restored).
        pairs (list[tuple]): From :func:`cdd11_pairs`.
        tiles (tuple[int]): Tile sides (multiples of the network's ``size_multiple``). Default: 64, 96, 128, 256.
        overlap (int): Tile overlap; each tile size uses ``min(overlap, tile // 2)``. Default: 32.

    Returns:
        list[dict]: One row per setting (``'whole'`` first): ``setting``, ``tile``, ``overlap``, ``psnr`` (mean
        over categories), ``psnr_images`` (mean over images), ``per_label``, ``tiled_images``, ``seconds``.
    """
    from interir_plugin.tools.explain import psnr
    from interir_plugin.utils.tiling import check_tile_options

    settings = [('whole', None, None)] + [(f'tile {t}', t, min(overlap, t // 2)) for t in tiles]
    for _, tile, ov in settings[1:]:
        check_tile_options(tile, ov, model.size_multiple)
    saved = model.tile, model.tile_overlap
    images = [(category, _read(lq), _read(gt)) for category, _, lq, gt in pairs]
    rows = []
    try:
        for setting, tile, ov in settings:
            model.tile, model.tile_overlap = tile, ov if ov is not None else saved[1]
            scores, tiled, t0 = {}, 0, time.perf_counter()
            for category, lq, gt in images:
                model.feed_data({'lq': lq})
                model.test()
                scores.setdefault(category, []).append(psnr(model.output[0].clamp(0, 1), gt[0]))
                tiled += tile is not None and (lq.shape[-2] > tile or lq.shape[-1] > tile)
            per_label = {c: float(np.mean(v)) for c, v in scores.items()}
            rows.append({'setting': setting, 'tile': tile, 'overlap': ov,
                         'psnr': float(np.mean(list(per_label.values()))),
                         'psnr_images': float(np.mean(sum(scores.values(), []))), 'per_label': per_label,
                         'tiled_images': tiled, 'images': len(images), 'seconds': time.perf_counter() - t0})
    finally:
        model.tile, model.tile_overlap = saved
    return rows


def _quick_fixture(tmp):
    """A random small InterIR checkpoint, its option file and a 2-image, 2-category CDD-11 folder under ``tmp``."""
    import yaml

    from interir_plugin.archs.interir_arch import InterIR
    from interir_plugin.data.preparation import write_cdd11_split

    net_opt = {'type': 'InterIR', 'num_feat': 8, 'num_stages': 1, 'num_experts': 2, 'expand': 1}
    torch.manual_seed(0)
    net = InterIR(**{k: v for k, v in net_opt.items() if k != 'type'})
    with torch.no_grad():  # away from the initialisation, whose output head returns the input unchanged
        for p in net.parameters():
            p.add_(0.05 * torch.randn_like(p))
    weights = os.path.join(tmp, 'net_g.pth')
    torch.save({'params': net.state_dict()}, weights)
    opt_path = os.path.join(tmp, 'test.yml')
    with open(opt_path, 'w') as f:
        yaml.safe_dump({'name': 'quick', 'network_g': net_opt,
                        'path': {'pretrain_network_g': weights, 'param_key_g': 'params'}}, f)
    rng = np.random.default_rng(0)
    images = [(f'img{i}', rng.random((80, 96, 3), dtype=np.float32)) for i in range(2)]
    write_cdd11_split(images, os.path.join(tmp, 'data'), categories=('low', 'haze'), desc='quick data')
    return opt_path, os.path.join(tmp, 'data')


def main():
    from interir_plugin.tools.loading import build_restorer
    from interir_plugin.tools.options import load_option_file

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('-opt', help='option file with network_g and path.pretrain_network_g')
    parser.add_argument('--data', help='CDD-11-layout folder (clear/ and category folders)')
    parser.add_argument('--tiles', default=','.join(map(str, DEFAULT_TILES)), help='comma-separated tile sides')
    parser.add_argument('--overlap', type=int, default=32, help='tile overlap (at most tile // 2 is used)')
    parser.add_argument('--categories', default=None, help='comma-separated categories (default: all present)')
    parser.add_argument('--max-images', type=int, default=None, help='first N images of each category')
    parser.add_argument('--threads', type=int, default=2)
    add_quick_flag(parser)
    args = parser.parse_args()
    set_threads(args.threads)
    tiles = tuple(int(t) for t in args.tiles.split(','))
    with tempfile.TemporaryDirectory() as tmp:
        if args.quick:
            args.opt, args.data = _quick_fixture(tmp)
            tiles, args.overlap = (32, 64), 8
        elif not args.opt or not args.data:
            parser.error('-opt and --data are required (or --quick)')
        opt = load_option_file(args.opt)
        model = build_restorer(opt, torch.device('cpu'), args.opt, require_weights=True)
        categories = args.categories.split(',') if args.categories else None
        pairs = cdd11_pairs(args.data, categories, args.max_images)
        rows = tile_table(model, pairs, tiles, args.overlap)
    whole = rows[0]['psnr']
    table = [{**r, 'tile': r['tile'] or 'whole', 'overlap': r['overlap'] if r['overlap'] is not None else '',
              'delta': r['psnr'] - whole, 'tiled': f"{r['tiled_images']}/{r['images']}"} for r in rows]
    emit('tiles', {'option_file': args.opt, 'data': args.data, 'network_g': opt['network_g'], 'rows': rows}, table,
         ['tile', 'overlap', 'psnr', 'delta', 'psnr_images', 'tiled', 'seconds'])


if __name__ == '__main__':
    main()
