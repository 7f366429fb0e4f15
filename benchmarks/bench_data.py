"""Data-pipeline cost on one core: physics synthesis per CDD-11 category against a PNG decode, LMDB vs disk reads.

1. Synthesis: for each CDD-11 category, ``interir_plugin.data.degradations.synthesize`` on a 256 x 256 photo patch
   (float32 in [0, 1]) beside ``cv2.imdecode`` of the same patch stored as PNG (compression 3, as
   ``interir prepare`` writes). Each timing is one call, min/median/max over ``--repeats`` runs; decode and
   synthesis runs alternate, so load on the machine hits both alike. ``ratio`` = synthesis min / decode min, the
   intrinsic cost (goal: at most 2 for ``low_haze_rain``); ``ratio_median`` is the same with medians, which
   other processes on a busy machine inflate.
2. Renderers: every formation model of :data:`interir_plugin.data.renderers.RENDERERS` alone on the same patch,
   interleaved with its component's original renderer (``ratio`` = min / original's min; goal: a few at most).
3. Reads: the same samples (``--images`` 256 x 256 photo tiles x 11 categories, CDD-11 layout) read through
   ``MultiDegradationPairedDataset`` from disk and from LMDBs made by ``interir prepare lmdb`` (whole images,
   decode and tensor conversion included), in samples per second of the best and the median full pass.
4. Input PSNR of every renderer, per category, on MiniCDD's held-out photos (``minicdd_renderers``' held-out
   splits) and of the stored LORO splits (``--minicdd``; a MiniCDD is built in a temporary folder if it is
   incomplete; the quick run measures one image of one renderer).

One core: torch and OpenCV threads are 1. Run: ``.venv/bin/python benchmarks/bench_data.py`` (``--quick``: one run
of each, one image).
"""
import argparse
import os
import sys
import tempfile

import cv2
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import add_quick_flag, emit, interleaved, set_threads, spread  # noqa: E402


def bench_synthesis(patch, repeats):
    from interir_plugin.data.degradations import CDD11_CATEGORIES, synthesize

    png = cv2.imencode('.png', np.round(patch * 255).astype(np.uint8), [cv2.IMWRITE_PNG_COMPRESSION, 3])[1]
    rows, results = [], {}
    for category in CDD11_CATEGORIES:
        counter = iter(range(10**9))  # a new index per call: every run draws new parameters, as in training
        wall, _ = interleaved({'decode': lambda: cv2.imdecode(png, cv2.IMREAD_UNCHANGED),
                               'synth': lambda c=category, it=counter: synthesize(patch, c, 0, next(it))}, repeats)
        t = {name: spread(v) for name, v in wall.items()}
        ratio = t['synth']['min'] / t['decode']['min']
        ratio_median = t['synth']['median'] / t['decode']['median']
        results[category] = {**t, 'ratio': ratio, 'ratio_median': ratio_median}
        rows.append({'category': category, 'synth_ms_min': t['synth']['min'] * 1e3,
                     'synth_ms_median': t['synth']['median'] * 1e3, 'patches_per_s': 1.0 / t['synth']['min'],
                     'decode_ms_min': t['decode']['min'] * 1e3, 'ratio': ratio, 'ratio_median': ratio_median})
    return results, rows, len(png)


def bench_renderers(patch, repeats):
    """Every registered renderer alone (``{component: {renderer: name}}``) on the patch, interleaved with the
    component's original renderer; ``ratio`` = renderer min / original min (goal: a few at most)."""
    from interir_plugin.data.degradations import synthesize
    from interir_plugin.data.renderers import DEFAULT_RENDERERS, RENDERERS

    rows, results = [], {}
    for component, names in RENDERERS.items():
        for name in names:
            counters = {k: iter(range(10**9)) for k in ('renderer', 'original')}
            cases = {'renderer': lambda n=name, c=component, it=counters['renderer']: synthesize(
                         patch, {c: {'renderer': n}}, 0, next(it)),
                     'original': lambda c=component, it=counters['original']: synthesize(patch, {c: {}}, 0, next(it))}
            wall, _ = interleaved(cases, repeats)
            t = {k: spread(v) for k, v in wall.items()}
            ratio = t['renderer']['min'] / t['original']['min']
            results[f'{component}.{name}'] = {**t, 'ratio': ratio}
            rows.append({'component': component, 'renderer': name, 'ms_min': t['renderer']['min'] * 1e3,
                         'ms_median': t['renderer']['median'] * 1e3,
                         'original_ms_min': t['original']['min'] * 1e3, 'ratio': ratio,
                         'original': DEFAULT_RENDERERS[component]})
    return results, rows


def _heldout_clear(root):
    """Only what ``minicdd_renderers``' held-out splits read: MiniCDD's held-out clear tiles, as make_minicdd
    writes them (the quick run's stand-in for a whole MiniCDD)."""
    from interir_plugin.data.preparation import (
        MINICDD_HELDOUT_PHOTOS,
        MINICDD_TILES,
        PNG_PARAMS,
        load_photo,
        photo_tiles,
    )

    os.makedirs(os.path.join(root, 'heldout', 'clear'))
    for photo in MINICDD_HELDOUT_PHOTOS:
        for k, tile in enumerate(photo_tiles(load_photo(photo), *MINICDD_TILES['heldout'])):
            cv2.imwrite(os.path.join(root, 'heldout', 'clear', f'{photo}_{k}.png'), tile[..., ::-1], PNG_PARAMS)


def input_psnr(root, quick):
    """Input PSNR (the LQ rounded to 8 bits, as stored, against the GT; RGB; dB) per renderer and CDD-11 category on
    MiniCDD's held-out photos (``minicdd_renderers``' ``heldout_<renderer>`` splits: the renderer's component by it,
    the others by the original renderers) and on the stored LORO splits (``minicdd_loro`` heldout and test)."""
    import torch

    from interir_plugin.data.multi_degradation_dataset import MultiDegradationPairedDataset
    from interir_plugin.data.renderers import RENDERERS

    sets = [(f'{c}.{n}', 'minicdd_renderers', f'heldout_{n}') for c in RENDERERS for n in RENDERERS[c]]
    sets += [('loro heldout', 'minicdd_loro', 'heldout'), ('loro test', 'minicdd_loro', 'test')]
    results, rows = {}, []
    for name, protocol, split in sets[:1] if quick else sets:
        ds = MultiDegradationPairedDataset({'phase': 'val', 'protocol': protocol, 'protocol_root': root,
                                            'protocol_split': split})
        per_label = {}
        for i in range(1 if quick else len(ds)):
            sample = ds[i]
            diff = torch.round(sample['lq'].clamp(0, 1) * 255) - torch.round(sample['gt'] * 255)
            psnr = 10 * np.log10(255.0 ** 2 / max(float((diff ** 2).mean()), 1e-10))
            per_label.setdefault(sample['label_name'], []).append(psnr)
        per_label['all'] = [v for values in per_label.values() for v in values]
        results[name] = {label: {'mean': float(np.mean(v)), 'min': float(np.min(v)), 'max': float(np.max(v)),
                                 'images': len(v)} for label, v in per_label.items()}
        rows += [{'set': name, 'label': label, **stats} for label, stats in results[name].items()]
    return results, rows


def bench_reads(photos, passes):
    from interir_plugin.data.multi_degradation_dataset import MultiDegradationPairedDataset
    from interir_plugin.data.preparation import make_lmdbs, write_cdd11_split

    with tempfile.TemporaryDirectory() as tmp:
        write_cdd11_split(photos, os.path.join(tmp, 'disk', 'train'), desc='bench set')
        make_lmdbs(os.path.join(tmp, 'disk'), os.path.join(tmp, 'lmdb'))
        sets = {'disk': MultiDegradationPairedDataset({'phase': 'val', 'cdd11': {
                    'root': os.path.join(tmp, 'disk', 'train')}}),
                'lmdb': MultiDegradationPairedDataset({'phase': 'val', 'io_backend': {'type': 'lmdb'}, 'cdd11': {
                    'root': os.path.join(tmp, 'lmdb', 'train')}})}
        n = len(sets['disk'])

        def full_pass(ds):
            return lambda: [ds[i] for i in range(n)]

        wall, _ = interleaved({name: full_pass(ds) for name, ds in sets.items()}, passes)
        t = {name: spread(v) for name, v in wall.items()}
    rows = [{'backend': name, 'samples': n, 'samples_per_s': n / t[name]['min'],
             'samples_per_s_median': n / t[name]['median']} for name in sets]
    return t, rows


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--repeats', type=int, default=50, help='timed runs per synthesis/decode figure')
    parser.add_argument('--passes', type=int, default=5, help='timed passes over the read benchmark set')
    parser.add_argument('--images', type=int, default=8, help='clean images of the read benchmark set')
    parser.add_argument('--minicdd', default=os.path.join('datasets', 'MiniCDD'),
                        help='MiniCDD root for the input-PSNR tables (built in a temporary folder if incomplete)')
    add_quick_flag(parser)
    args = parser.parse_args()
    if args.quick:
        args.repeats, args.passes, args.images = 1, 1, 1
    set_threads(1)
    cv2.setNumThreads(1)

    import interir_plugin  # noqa: F401  (shims before basicsr)
    from interir_plugin.data.preparation import load_photo, make_minicdd, minicdd_split_names, photo_tiles
    from interir_plugin.utils.tables import markdown_table

    tiles = [t for name in ('astronaut', 'coffee', 'rocket', 'chelsea')
             for t in photo_tiles(load_photo(name), 300, 256, 256, 1, 2)]
    to_float = [np.ascontiguousarray(t[..., ::-1]).astype(np.float32) / np.float32(255.0) for t in tiles]
    synth, synth_rows, png_bytes = bench_synthesis(to_float[0], args.repeats)
    renderers, renderer_rows = bench_renderers(to_float[0], args.repeats)
    reads, read_rows = bench_reads([(f'img{i}', img) for i, img in enumerate(to_float[:args.images])], args.passes)
    with tempfile.TemporaryDirectory() as tmp:
        root = args.minicdd
        if not all(os.path.isdir(os.path.join(root, split)) for split in minicdd_split_names()):
            root = os.path.join(tmp, 'MiniCDD')
            if args.quick:
                _heldout_clear(root)
            else:
                make_minicdd(root)
        psnr, psnr_rows = input_psnr(root, args.quick)
    emit('data', {'threads_opencv': cv2.getNumThreads(), 'patch': [256, 256], 'png_bytes': png_bytes,
                  'synthesis': synth, 'renderers': renderers, 'reads': reads, 'input_psnr': psnr},
         synth_rows, ['category', 'synth_ms_min', 'synth_ms_median', 'patches_per_s', 'decode_ms_min', 'ratio',
                      'ratio_median'])
    print()
    print('\n'.join(markdown_table(
        ['component', 'renderer', 'ms (min)', 'ms (median)', 'original', 'original ms (min)', 'ratio to original'],
        [[r['component'], r['renderer'], f"{r['ms_min']:.3g}", f"{r['ms_median']:.3g}", r['original'],
          f"{r['original_ms_min']:.3g}", f"{r['ratio']:.3g}"] for r in renderer_rows])))
    print()
    print('\n'.join(markdown_table(['backend', 'samples', 'samples_per_s (best pass)', 'samples_per_s (median pass)'],
                                    [[r['backend'], r['samples'], f"{r['samples_per_s']:.4g}",
                                      f"{r['samples_per_s_median']:.4g}"] for r in read_rows])))
    print()
    print('\n'.join(markdown_table(['set', 'label', 'images', 'input PSNR mean', 'min', 'max'],
                                    [[r['set'], r['label'], r['images'], f"{r['mean']:.2f}", f"{r['min']:.2f}",
                                      f"{r['max']:.2f}"] for r in psnr_rows])))

if __name__ == '__main__':
    main()
