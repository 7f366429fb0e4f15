"""The audit's images: :class:`Sample` and :func:`load_samples` (clean folders, CDD-11 layouts, protocol splits).

Three kinds of ``data``:

- a folder of clean images: each is centre-cropped to ``max_side`` and synthesised into every category
  (:func:`interir_plugin.data.degradations.synthesize` with ``seed``; image ``i`` and category ``c`` use index
  ``i * 11 + position of c in CDD11_CATEGORIES``, so a subset of categories gives the same pairs), together with
  the synthesiser's physical maps;
- a CDD-11-layout folder (``clear/`` + category folders): read as it is. Paired images have no maps;
- a protocol (name in ``datasets_meta/`` or file) and one or more of its splits (default ``test``; names or shell
  patterns such as ``heldout_*``): paired sources as stored, synthesis sources synthesised as above, with maps.

Every synthesised sample knows the renderer (formation model) of each of its components (the drawn
``<degradation>.renderer``, else the original renderer); a stored pair does not, and its renderer group is the name
of the data it came from (:attr:`Sample.origin`).
"""
import fnmatch
import os.path as osp

import numpy as np
import yaml

from interir_plugin.data.degradations import CATEGORY_PARTS, CDD11_CATEGORIES, category_spec, synthesize
from interir_plugin.data.renderers import DEFAULT_RENDERERS
from interir_plugin.data.sources import (
    Source,
    decode_depth,
    expand_cdd11,
    list_folder,
    load_protocol,
    resolve_protocol,
)
from interir_plugin.tools.imageio import read_image
from interir_plugin.utils.presence import PRESENCE_PARTS

#: Components whose presence the routing AUCs, the recogniser's calibration and the active-set metrics test.
COMPONENTS = PRESENCE_PARTS  # the same four parts InterIR's presence gates know
#: Default centre-crop side (the MiniCDD test tiles are 256 x 256).
DEFAULT_MAX_SIDE = 256
#: The protocol split audited when none is named.
DEFAULT_SPLIT = 'test'


class Sample:
    """One degraded image with its clean target and what is known about it.

    Args:
        name (str): Name for the report (``<image>/<label>``).
        label (str): Degradation label.
        lq (ndarray): ``H x W x 3`` float32 RGB degraded image in [0, 1].
        gt (ndarray): Clean image, same shape.
        degradations (tuple[str] | None): Degradation names (``low_light``, ``rain``, ...) when known.
        maps (dict | None): Synthesiser maps (``return_maps``), None for a stored pair. Default: None.
        group (str | None): The clean image it was made from (its file); the routing metrics hold out every
            sample of a group together. None: the sample is its own group. Default: None.
        renderers (dict | None): ``{component: renderer name}`` of the :data:`COMPONENTS` it carries (``{'haze':
            'fog'}``); None when unknown (a stored pair). Default: None.
        origin (str | None): The data it came from (folder, ``protocol:split``): the renderer group of a sample
            without ``renderers``. Default: None.
    """

    def __init__(self, name, label, lq, gt, degradations, maps=None, group=None, renderers=None, origin=None):
        self.name, self.label, self.lq, self.gt, self.degradations, self.maps = name, label, lq, gt, degradations, maps
        self.group = name if group is None else group
        self.renderers, self.origin = renderers, origin

    @property
    def components(self):
        """The :data:`COMPONENTS` present (a frozenset), or None when the degradations are unknown."""
        if self.degradations is None:
            return None
        return frozenset(c for c in COMPONENTS if CATEGORY_PARTS[c] in self.degradations)

    @property
    def renderer_groups(self):
        """``[(group name, component or None)]``: the renderer of each component it carries, or one group named
        after its origin when they are unknown (a stored pair, or an image without any of the four components)."""
        if self.renderers:
            return [(name, part) for part, name in self.renderers.items()]
        return [(self.origin or 'data', None)]


def _centre_crop(img, max_side):
    if not max_side:
        return img
    h, w = img.shape[:2]
    top, left = max(0, (h - max_side) // 2), max(0, (w - max_side) // 2)
    return np.ascontiguousarray(img[top:top + max_side, left:left + max_side])


def _read_rgb(path, max_side):
    return _centre_crop(read_image(path).rgb, max_side)


def label_degradations(label, spec):
    """Degradation names of a synthesis ``spec`` (parsed), else of a CDD-11 ``label``; None when unknown."""
    if spec is not None:
        return tuple(name for name, _ in spec)
    if label in CDD11_CATEGORIES:
        return tuple(CATEGORY_PARTS[p] for p in label.split('_'))
    return None


def drawn_renderers(drawn, degradations):
    """``{component: renderer}`` of a synthesised sample from its drawn values (a step without ``renderer`` used the
    original model, :data:`DEFAULT_RENDERERS`)."""
    out = {}
    for part in COMPONENTS:
        name = CATEGORY_PARTS[part]
        if name in (degradations or ()):
            out[part] = drawn.get(f'{name}.renderer', DEFAULT_RENDERERS[name])
    return out


def _synthesised(name, label, clean, spec, seed, index, group, origin, depth=None):
    """A :class:`Sample` of ``clean`` synthesised by ``spec`` (parsed or a category) with its maps and renderers."""
    lq, drawn, maps = synthesize(clean, spec, seed, index, depth=depth, return_maps=True)
    degradations = label_degradations(label, spec if isinstance(spec, tuple) else None)
    return Sample(name, label, lq, clean, degradations, maps, group, drawn_renderers(drawn, degradations), origin)


def _clean_folder_samples(folder, categories, seed, max_images, max_side):
    categories = list(categories or CDD11_CATEGORIES)
    for c in categories:
        category_spec(c)  # names the unknown category
    if len(set(categories)) != len(categories):
        raise ValueError(f'categories {categories} name a category twice')
    paths = list_folder(folder, 'disk')
    keys = sorted(paths)[:max_images] if max_images else sorted(paths)
    samples = []
    for i, key in enumerate(keys):
        clean = _read_rgb(paths[key], max_side)
        for c in categories:
            index = i * len(CDD11_CATEGORIES) + CDD11_CATEGORIES.index(c)
            samples.append(_synthesised(f'{key}/{c}', c, clean, c, seed, index, paths[key], folder))
    return samples


def _source_samples(source, seed, max_images, max_side, first_index, origin):
    """Samples of one :class:`~interir_plugin.data.sources.Source` (disk): pairs as stored, synthesis with maps."""
    if source.kind != 'disk':
        raise ValueError(f'audit reads disk data only; the source of label {source.label!r} is an LMDB '
                         f'({source.roots["gt"]})')
    count = min(len(source), max_images) if max_images else len(source)
    samples = []
    for j in range(count):
        gt_path = source.gt_paths[j]
        gt = _read_rgb(gt_path, max_side)
        name = f'{osp.splitext(osp.basename(gt_path))[0]}/{source.label}'
        if source.synthesis is not None:
            depth = None
            if source.depth_paths is not None:
                with open(source.depth_paths[j], 'rb') as f:
                    depth = _centre_crop(decode_depth(f.read(), source.depth_paths[j]), max_side)[..., 0]
            samples.append(_synthesised(name, source.label, gt, source.synthesis, seed, first_index + j, gt_path,
                                        origin, depth))
            continue
        lq_path = source.lq_paths[j]
        lq = _read_rgb(lq_path, max_side)
        if lq.shape != gt.shape:
            raise ValueError(f'size mismatch: {lq_path} is {lq.shape[:2]} but {gt_path} is {gt.shape[:2]} '
                             f'(after the centre crop to {max_side})')
        samples.append(Sample(name, source.label, lq, gt, label_degradations(source.label, None), group=gt_path,
                              origin=origin))
    return samples


def protocol_splits(data, split=None):
    """The split names of protocol ``data`` that ``split`` selects, in the file's order.

    Args:
        data (str): Protocol name or file.
        split (str | list[str] | None): Split names or shell patterns (``heldout_*``); None: ``test``.

    Returns:
        list[str]: The selected splits (each at most once).
    """
    patterns = [DEFAULT_SPLIT] if split is None else [split] if isinstance(split, str) else list(split)
    if not patterns or not all(isinstance(p, str) and p for p in patterns):
        raise ValueError(f'split must be a split name, a pattern or a non-empty list of them, got {split!r}')
    path = resolve_protocol(data)
    with open(path, encoding='utf-8') as f:
        names = list((yaml.safe_load(f) or {}).get('splits') or {})
    chosen = []
    for pattern in patterns:
        hits = fnmatch.filter(names, pattern)
        if not hits:
            raise KeyError(f'protocol file {path} has no split {pattern!r}; it has {names} (choose with --split, '
                           'for example --split heldout_*)')
        chosen += [h for h in hits if h not in chosen]
    return chosen


def _protocol_entries(data, categories, split):
    """``[(split, labels, source entries)]`` of the protocol splits that ``split`` selects."""
    disk, out = {'type': 'disk'}, []
    for name in protocol_splits(data, split):
        labels, entries, cdd11 = load_protocol(data, split=name, labels=categories)
        entries = list(entries) + (expand_cdd11(cdd11, disk, f'protocol {data} {name} cdd11') if cdd11 else [])
        out.append((name, labels, entries))
    return out


def _entries(data, categories, split):
    """``[(origin, labels, source entries)]`` of a CDD-11-layout folder or of protocol splits."""
    if osp.isdir(data):
        labels = list(categories or [c for c in CDD11_CATEGORIES if osp.isdir(osp.join(data, c))])
        if not labels:
            raise FileNotFoundError(f'--data {data} has clear/ but no CDD-11 category folder '
                                    f'({", ".join(CDD11_CATEGORIES)})')
        return [(data, labels, expand_cdd11({'root': data, 'categories': labels}, {'type': 'disk'}, f'--data {data}'))]
    try:
        resolve_protocol(data)
    except FileNotFoundError as err:
        raise FileNotFoundError(f'--data {data} is not a folder (clean images or CDD-11 layout) nor a protocol: '
                                f'{err}') from err
    name = osp.splitext(osp.basename(data))[0]
    return [(f'{name}:{s}', labels, entries) for s, labels, entries in _protocol_entries(data, categories, split)]


def load_samples(data, categories=None, seed=0, max_images=None, max_side=DEFAULT_MAX_SIDE, split=None):
    """The audit's images (see the module docstring for the three kinds of ``data``).

    Args:
        data (str): Folder of clean images, CDD-11-layout folder (with ``clear/``), or protocol name or file.
        categories (list[str] | None): Categories to synthesise, or labels to keep of a labelled set; None: all.
            Default: None.
        seed (int): Synthesis seed. Default: 0.
        max_images (int | None): At most this many clean images (each synthesised into every category) or images
            per source (label) of a labelled set, the first in sorted order; None: all. Default: None.
        max_side (int | None): Centre-crop images to at most this side (None: keep). Default: 256.
        split (str | list[str] | None): Protocol split(s) to read: names or shell patterns (``'heldout_*'``: every
            per-renderer split of ``minicdd_renderers``); None: ``test``. Only for a protocol. Default: None.

    Returns:
        tuple: ``(list of Sample, kind)`` with kind ``'synthesised'`` (every sample has maps) or ``'labelled'``.
    """
    if max_images is not None and (not isinstance(max_images, int) or max_images < 1):
        raise ValueError(f'max_images must be a positive int or None, got {max_images!r}')
    if split is not None and osp.isdir(data):
        raise ValueError(f'split {split!r} is for a protocol; --data {data} is a folder')
    if osp.isdir(data) and not osp.isdir(osp.join(data, 'clear')):
        return _clean_folder_samples(data, categories, seed, max_images, max_side), 'synthesised'
    parts = _entries(data, categories, split)
    samples, cache = [], {}
    for origin, labels, entries in parts:
        first = len(samples)
        for n, entry in enumerate(entries):
            source = Source(entry, labels, {'type': 'disk'}, f'{origin} source {n} ({entry.get("label")})', cache)
            samples += _source_samples(source, seed, max_images, max_side, len(samples), origin)
        if len(parts) > 1:  # the same photo and label recur in several splits: name the split
            for s in samples[first:]:
                s.name = f'{origin.split(":")[-1]}:{s.name}'
    kind = 'synthesised' if samples and all(s.maps is not None for s in samples) else 'labelled'
    return samples, kind
