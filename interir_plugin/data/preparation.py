"""Data-set preparation behind ``interir prepare``: the embedded MiniCDD, meta-info lists, LMDBs and composite
sets synthesised from any clean folder. Every writer refuses to overwrite what exists unless ``force``.
"""
import json
import os
import os.path as osp
import shutil

import cv2
import numpy as np
from tqdm import tqdm

from interir_plugin.data.degradations import CDD11_CATEGORIES, category_spec, synthesize
from interir_plugin.utils.images import IMAGE_EXTENSIONS, STORED_CHANNELS, decode, decode_image

#: MiniCDD photos (:func:`load_photo`), split by photo so no scene is in two splits. Training: scikit-image's (the
#: mostly black ``hubble_deep_field`` and ``retina`` are stored but not trained on: minicdd/train_synth.txt), Kodak's
#: parrots, the BragZone's monarch and tulips, and PyWavelets' grey ``ascent``.
MINICDD_TRAIN_PHOTOS = ('astronaut', 'rocket', 'immunohistochemistry', 'hubble_deep_field', 'retina', 'parrots',
                        'monarch', 'tulips', 'ascent')
MINICDD_TEST_PHOTOS = ('chelsea', 'coffee', 'motorcycle_left')
#: Held-out photos for decisions (recipes, presets, ablations), never trained on and never the test split:
#: matplotlib's ``grace_hopper``, scikit-image's grey ``camera`` and ``coins`` (grey replicated to RGB), and the
#: colour ``sail`` (outdoor, many people) and ``barbara`` (indoor, striped fabrics).
MINICDD_HELDOUT_PHOTOS = ('grace_hopper', 'camera', 'coins', 'sail', 'barbara')
#: (short side the photo is resized to, tile height, tile width, tile rows, tile columns) per split.
MINICDD_TILES = {'train': (384, 192, 192, 2, 2), 'test': (288, 256, 256, 1, 2), 'heldout': (384, 192, 192, 2, 2)}
#: MiniCDD's splits and their photos, in the order they are synthesised (each split draws its own indices).
MINICDD_SPLITS = (('train', MINICDD_TRAIN_PHOTOS), ('test', MINICDD_TEST_PHOTOS), ('heldout', MINICDD_HELDOUT_PHOTOS))
#: Issue 22's leave-one-renderer-out (LORO) protocol (``datasets_meta/minicdd_loro.yml``): per component, the
#: renderer held out from training, a new model each, not the original. ``camera``: the only model with a per-channel
#: colour cast, linear-light shot noise and 8-bit quantisation; ``fog``: transmission unrelated to depth and a patchy
#: additive airlight, against the dark-channel prior the head's transmission cue rests on; ``occluding``: streaks
#: that cover the scene (darker than a bright background) instead of adding light, against the white top-hat cue;
#: ``layers``: falling snow drawn another way (defocused bokeh discs, motion-blurred layers, screen blend).
LORO_HELDOUT_RENDERERS = {'low_light': 'camera', 'haze': 'fog', 'rain': 'occluding', 'snow': 'layers'}
#: MiniCDD's stored LORO splits: (folder, the split whose clear tiles it degrades with the held-out renderers).
MINICDD_LORO_SPLITS = (('loro_heldout', 'heldout'), ('loro_test', 'test'))
#: PNG compression level of every writer (deterministic bytes for deterministic pixels).
PNG_PARAMS = [cv2.IMWRITE_PNG_COMPRESSION, 3]


class OverwriteError(FileExistsError):
    """A preparation step would overwrite existing output (pass ``force``)."""


def _delete_if_forced(path, force):
    """Delete ``path`` (a file, or a folder with everything in it) when ``force``; if it exists and not ``force``,
    raise :class:`OverwriteError`. Afterwards ``path`` is absent and can be written."""
    if osp.lexists(path):
        if not force:
            raise OverwriteError(f'{path} exists; pass --force (force=True) to replace it')
        shutil.rmtree(path) if osp.isdir(path) and not osp.islink(path) else os.remove(path)


def _to_uint8(img):
    return np.round(np.clip(img, 0.0, 1.0) * 255.0).astype(np.uint8)


def _write_png(path, img):
    if not cv2.imwrite(path, _to_uint8(img), PNG_PARAMS):
        raise OSError(f'cannot write {path}')


#: Photos that ship inside pip packages, by name: ``(pip distribution, import package, file inside it)``. They are
#: read from the installed package's folder (the package is not imported). Sources and licences: docs/data.md,
#: "Photos". ``parrots`` is Kodak's kodim23; ``monarch``, ``tulips``, ``sail`` come from the Waterloo BragZone.
PACKAGE_PHOTOS = {
    'parrots': ('sporco', 'sporco', 'data/kodim23.png'),
    'monarch': ('sporco', 'sporco', 'data/monarch.png'),
    'tulips': ('sporco', 'sporco', 'data/tulips.png'),
    'sail': ('sporco', 'sporco', 'data/sail.png'),
    'barbara': ('sporco', 'sporco', 'data/barbara.png'),
    'ascent': ('PyWavelets', 'pywt', 'data/ascent.npz'),
}


def _package_file(name):
    """The file of a :data:`PACKAGE_PHOTOS` photo inside its installed package."""
    import importlib.util

    dist, package, relpath = PACKAGE_PHOTOS[name]
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(f'photo {name!r} ships with the pip package {dist}: pip install {dist}')
    path = osp.join(spec.submodule_search_locations[0], *relpath.split('/'))
    if not osp.isfile(path):
        raise FileNotFoundError(f'photo {name!r}: {path} is not in the installed {dist}')
    return path


def load_photo(name):
    """An RGB uint8 photo, grey ones replicated to three channels: scikit-image's bundled data
    (``motorcycle_left``: left view of the stereo pair), matplotlib's ``grace_hopper``, or a
    :data:`PACKAGE_PHOTOS` photo."""
    if name in PACKAGE_PHOTOS:
        path = _package_file(name)
        if path.endswith('.npz'):  # PyWavelets keeps its images as arrays
            img = np.load(path)['data']
        else:
            with open(path, 'rb') as f:
                img = np.round(decode_image(f.read(), path)[..., ::-1] * 255)  # the one image rule, BGR -> RGB
    elif name == 'grace_hopper':  # matplotlib's sample photo (matplotlib is a dependency)
        import matplotlib.cbook

        with matplotlib.cbook.get_sample_data('grace_hopper.jpg') as f:
            img = np.round(decode_image(f.read(), 'grace_hopper.jpg')[..., ::-1] * 255)
    else:
        try:
            import skimage.data
        except ImportError as err:
            raise ImportError('interir prepare minicdd needs scikit-image (pip install scikit-image)') from err
        img = skimage.data.stereo_motorcycle()[0] if name == 'motorcycle_left' else getattr(skimage.data, name)()
    img = np.repeat(img[..., None], 3, 2) if img.ndim == 2 else img
    return np.ascontiguousarray(img).astype(np.uint8)


def photo_tiles(img, short_side, tile_h, tile_w, rows, cols):
    """Resize ``img`` so its shorter side is ``short_side`` (area filter) and cut a ``rows x cols`` grid of
    ``tile_h x tile_w`` tiles spread evenly over it."""
    h, w = img.shape[:2]
    scale = short_side / min(h, w)
    img = cv2.resize(img, (max(tile_w, round(w * scale)), max(tile_h, round(h * scale))),
                     interpolation=cv2.INTER_AREA)
    h, w = img.shape[:2]
    tops = np.linspace(0, h - tile_h, rows).round().astype(int)
    lefts = np.linspace(0, w - tile_w, cols).round().astype(int)
    return [img[t:t + tile_h, s:s + tile_w] for t in tops for s in lefts]


def write_cdd11_split(images, out, categories=CDD11_CATEGORIES, seed=0, index_offset=0, desc=None, renderers=None):
    """Write clean images and their synthesised categories in the CDD-11 layout.

    Args:
        images (list[tuple[str, ndarray]]): ``(name, float32 BGR image in [0, 1])``; written as ``<name>.png``.
        out (str): Split folder; gets ``clear/`` and one folder per category.
        categories (tuple[str]): CDD-11 categories to synthesise. Default: all 11.
        seed (int): Synthesis seed. Default: 0.
        index_offset (int): Added to the synthesis index (``category number x len(images) + image number``),
            so two splits written with one seed draw different degradations. Default: 0.
        desc (str | None): Progress-bar label. Default: None.
        renderers (dict | None): Degradation -> renderer name(s) for every category
            (:func:`~interir_plugin.data.degradations.category_spec`). Default: None (the original renderers).

    Returns:
        dict: ``{category: {name: drawn parameters}}``.
    """
    for folder in ('clear', *categories):
        os.makedirs(osp.join(out, folder), exist_ok=True)
    drawn = {c: {} for c in categories}
    with tqdm(total=len(images) * (len(categories) + 1), desc=desc or out, unit='img') as bar:
        for name, img in images:
            _write_png(osp.join(out, 'clear', f'{name}.png'), img)
            bar.update()
        for ci, category in enumerate(categories):
            for ii, (name, img) in enumerate(images):
                # synthesise from the 8-bit clean image that is stored, so the pair is exactly consistent
                clean = _to_uint8(img).astype(np.float32) / np.float32(255.0)
                spec = category if renderers is None else category_spec(category, renderers)
                lq, params = synthesize(clean, spec, seed, index_offset + ci * len(images) + ii)
                _write_png(osp.join(out, category, f'{name}.png'), lq)
                drawn[category][name] = params
                bar.update()
    return drawn


def minicdd_split_names():
    """Every folder :func:`make_minicdd` writes: :data:`MINICDD_SPLITS`, then :data:`MINICDD_LORO_SPLITS`."""
    return tuple(split for split, _ in MINICDD_SPLITS) + tuple(split for split, _ in MINICDD_LORO_SPLITS)


def make_minicdd(out, seed=0, force=False):
    """Build MiniCDD: photos, tiled and degraded into the CDD-11 layout ``out/{train,test,heldout}/...``, plus the
    stored splits of the leave-one-renderer-out protocol ``out/{loro_heldout,loro_test}/...``.

    Deterministic for a seed (byte-identical PNGs for given numpy/OpenCV versions). Writes ``out/train``,
    ``out/test``, ``out/heldout`` (:data:`MINICDD_SPLITS`, the original renderers); then ``out/loro_heldout`` and
    ``out/loro_test`` (:data:`MINICDD_LORO_SPLITS`): the clear tiles of the held-out and test splits, byte for byte,
    degraded by the renderers :data:`LORO_HELDOUT_RENDERERS` only. The synthesis indices run on from split to
    split, so no two splits share degradation parameters, and the first three are what MiniCDD was before the
    LORO splits existed. ``out/manifest.json`` holds photos, tiles, seed, drawn parameters (with each renderer)
    and the LORO splits' renderers; other contents of ``out`` are left alone.

    Args:
        out (str): Output folder.
        seed (int): Synthesis seed. Default: 0.
        force (bool): Replace existing splits and manifest. Default: False.

    Returns:
        dict: The manifest.
    """
    targets = [osp.join(out, p) for p in (*minicdd_split_names(), 'manifest.json')]
    existing = [p for p in targets if osp.lexists(p)]
    if existing and not force:
        raise OverwriteError(f'{", ".join(existing)} exist(s); pass --force (force=True) to replace')
    for path in existing:
        _delete_if_forced(path, True)
    manifest = {'name': 'MiniCDD', 'seed': int(seed), 'categories': list(CDD11_CATEGORIES), 'splits': {}}
    offset, tiles_of = 0, {}
    for split, photos in MINICDD_SPLITS:
        images = []
        for photo in photos:
            tiles = photo_tiles(load_photo(photo), *MINICDD_TILES[split])
            for k, tile in enumerate(tiles):
                bgr = np.ascontiguousarray(tile[..., ::-1]).astype(np.float32) / np.float32(255.0)
                images.append((f'{photo}_{k}', bgr))
        drawn = write_cdd11_split(images, osp.join(out, split), seed=seed, index_offset=offset,
                                  desc=f'MiniCDD {split}')
        offset += len(images) * len(CDD11_CATEGORIES)
        tiles_of[split] = images
        manifest['splits'][split] = {'photos': list(photos), 'tiles': list(MINICDD_TILES[split]),
                                     'images': [n for n, _ in images], 'params': drawn}
    for split, source in MINICDD_LORO_SPLITS:
        images = tiles_of[source]
        drawn = write_cdd11_split(images, osp.join(out, split), seed=seed, index_offset=offset,
                                  desc=f'MiniCDD {split}', renderers=LORO_HELDOUT_RENDERERS)
        offset += len(images) * len(CDD11_CATEGORIES)
        manifest['splits'][split] = {**{k: v for k, v in manifest['splits'][source].items() if k != 'params'},
                                     'clear_from': source, 'renderers': dict(LORO_HELDOUT_RENDERERS),
                                     'params': drawn}
    with open(osp.join(out, 'manifest.json'), 'w', encoding='utf-8') as f:
        json.dump(manifest, f, indent=1, sort_keys=True)
    return manifest


def synth_folder(input_dir, out, categories=CDD11_CATEGORIES, seed=0, force=False):
    """A CDD-11-layout composite set from any folder of clean images (``out/clear`` + one folder per category).

    Images are read with the dataset's conversion rule (grey replicated, alpha dropped, 16-bit scaled) and
    written as 8-bit PNGs named after their stems.

    Args:
        input_dir (str): Folder of clean images (not recursive).
        out (str): Output folder.
        categories (tuple[str]): CDD-11 categories. Default: all 11.
        seed (int): Synthesis seed. Default: 0.
        force (bool): Replace an existing ``out``. Default: False.

    Returns:
        int: Number of clean images.
    """
    for c in categories:
        if c not in CDD11_CATEGORIES:
            raise ValueError(f'unknown category {c!r}; expected some of {", ".join(CDD11_CATEGORIES)}')
    if not osp.isdir(input_dir):
        raise FileNotFoundError(f'input folder not found: {input_dir}')
    names = sorted(n for n in os.listdir(input_dir) if n.lower().endswith(IMAGE_EXTENSIONS))
    if not names:
        raise ValueError(f'empty folder: no images found in {input_dir}')
    stems = [osp.splitext(n)[0] for n in names]
    if len(set(stems)) != len(stems):
        raise ValueError(f'{input_dir} holds two images with one name and different extensions')
    _delete_if_forced(out, force)
    images = []
    for name, stem in zip(names, stems):
        with open(osp.join(input_dir, name), 'rb') as f:
            images.append((stem, decode_image(f.read(), osp.join(input_dir, name))))
    write_cdd11_split(images, out, tuple(categories), seed)
    return len(images)


def image_folders(root):
    """Folders under ``root`` (itself included) that directly hold images, sorted, relative to ``root``."""
    if not osp.isdir(root):
        raise FileNotFoundError(f'data folder not found: {root}')
    found = []
    for folder, dirs, files in os.walk(root):
        dirs.sort()
        if any(f.lower().endswith(IMAGE_EXTENSIONS) for f in files):
            found.append(osp.relpath(folder, root))
    if not found:
        raise ValueError(f'no image folders found under {root}')
    return found


def _images(folder):
    return sorted(f for f in os.listdir(folder) if f.lower().endswith(IMAGE_EXTENSIONS))


def write_meta(root, out, force=False):
    """Write BasicSR meta-info lists (``<name> (h,w,c)`` per line) for every image folder under ``root``.

    A CDD-11 split (a folder with ``clear/`` and category folders) gets one list ``<out>/<split>.txt`` shared by
    its categories, after checking every category holds exactly the names of ``clear/``; any other image folder
    gets ``<out>/<relative path>.txt``.

    Args:
        root (str): Data-set root.
        out (str): Folder of the lists (e.g. ``datasets_meta/<name>``).
        force (bool): Overwrite existing lists. Default: False.

    Returns:
        list[str]: The files written.
    """
    folders = image_folders(root)
    splits = sorted({osp.dirname(f) or '.' for f in folders if osp.basename(f) == 'clear'})
    jobs = []
    for split in splits:
        names = _images(osp.join(root, split, 'clear'))
        for cat in CDD11_CATEGORIES:
            folder = osp.join(root, split, cat)
            if not osp.isdir(folder):
                continue
            have = set(_images(folder))
            missing, extra = sorted(set(names) - have), sorted(have - set(names))
            if missing or extra:
                raise FileNotFoundError(f'{folder} does not match {osp.join(root, split, "clear")}: missing '
                                        f'{missing[:5]}, extra {extra[:5]}')
        jobs.append((osp.join(root, split, 'clear'), osp.join(out, f'{split if split != "." else "meta_info"}.txt')))
    in_split = {osp.join(s, c) if s != '.' else c for s in splits for c in ('clear', *CDD11_CATEGORIES)}
    jobs += [(osp.join(root, f), osp.join(out, f'{f if f != "." else "meta_info"}.txt'))
             for f in folders if f not in in_split]
    clashes = [dst for _, dst in jobs if osp.exists(dst)]
    if clashes and not force:
        raise OverwriteError(f'{", ".join(clashes)} exist(s); pass --force (force=True) to replace')
    for folder, dst in tqdm(jobs, desc='meta-info', unit='list'):
        lines = []
        for name in _images(folder):
            with open(osp.join(folder, name), 'rb') as f:
                img = decode(f.read(), osp.join(folder, name))
            h, w = img.bgr.shape[:2]
            lines.append(f'{name} ({h},{w},{STORED_CHANNELS[img.mode]})\n')
        os.makedirs(osp.dirname(dst) or '.', exist_ok=True)
        with open(dst, 'w', encoding='utf-8') as f:
            f.writelines(lines)
    return [dst for _, dst in jobs]


def lmdb_key(name):
    """LMDB key of an image file name: the stem with dots replaced by ``_`` (BasicSR splits keys at dots)."""
    return osp.splitext(name)[0].replace('.', '_')


def make_lmdbs(root, out, force=False):
    """One LMDB per image folder under ``root`` with BasicSR's ``make_lmdb_from_imgs`` (``<out>/<rel>.lmdb``).

    Keys are the file stems without dots (:func:`lmdb_key`), so a CDD-11 tree gives ``<split>/clear.lmdb`` and
    ``<split>/<category>.lmdb`` with the same keys, ready for ``io_backend: {type: lmdb}``. Images are stored
    as lossless PNG (BasicSR re-encodes them unchanged: bit depth and channels are kept).

    Args:
        root (str): Data-set root.
        out (str): Output root.
        force (bool): Replace existing LMDBs. Default: False.

    Returns:
        list[str]: The LMDB paths.
    """
    from basicsr.utils.lmdb_util import make_lmdb_from_imgs

    folders = image_folders(root)
    targets = [osp.join(out, 'root.lmdb' if f == '.' else f'{f}.lmdb') for f in folders]
    clashes = [t for t in targets if osp.lexists(t)]
    if clashes and not force:
        raise OverwriteError(f'{", ".join(clashes)} exist(s); pass --force (force=True) to replace')
    for folder, target in zip(folders, targets):
        src_dir = osp.join(root, folder)
        names = _images(src_dir)
        keys = [lmdb_key(n) for n in names]
        if len(set(keys)) != len(keys):
            dup = sorted({k for k in keys if keys.count(k) > 1})
            raise ValueError(f'{src_dir}: file names collide as LMDB keys (dots become _): {dup[:5]}')
        _delete_if_forced(target, True)
        os.makedirs(osp.dirname(target) or '.', exist_ok=True)
        # map size: 20x the files on disk covers PNG re-encoding of JPEG sources; LMDB only reserves it
        size = 20 * sum(osp.getsize(osp.join(src_dir, n)) for n in names) + (64 << 20)
        make_lmdb_from_imgs(src_dir, target, names, keys, map_size=size)
    return targets
