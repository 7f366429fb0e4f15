"""Sources of the multi-degradation dataset: option checking, protocol files, pairing, depth-map decoding (images
are decoded by :mod:`interir_plugin.utils.images`) and the index table that makes sampling balanced or proportional.

A *source* is one labelled set of pairs: paired folders (``dataroot_gt`` + ``dataroot_lq``) or clean images with a
synthesis spec. Items are addressed by *keys*: the file path relative to the folder without its extension on disk
(``sub/img001``), the LMDB key in an LMDB (BasicSR's ``make_lmdb_from_imgs`` keys: names without extension).
"""
import os
import os.path as osp
import re

import numpy as np
import yaml
from basicsr.utils import scandir

from interir_plugin.data.degradations import CDD11_CATEGORIES, parse_spec
from interir_plugin.utils.images import IMAGE_EXTENSIONS, decode_image

#: keys a source entry may have.
SOURCE_KEYS = ('label', 'dataroot_gt', 'dataroot_lq', 'synthesis', 'io_backend', 'meta_info_file', 'repeat',
               'lq_to_gt', 'dataroot_depth')
#: keys of the ``cdd11`` shorthand.
CDD11_KEYS = ('root', 'categories', 'meta_info_file', 'io_backend')
#: top-level keys of a protocol file.
PROTOCOL_KEYS = ('name', 'description', 'labels', 'default_root', 'splits')
#: the folder of the protocol files: ``datasets_meta/`` of the repository (source checkouts, editable installs), else
#: the copy that setup.py ships inside the package as ``interir_plugin/datasets_meta`` (wheels).
META_DIR = osp.join(osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))), 'datasets_meta')
if not osp.isdir(META_DIR):
    META_DIR = osp.join(osp.dirname(osp.dirname(osp.abspath(__file__))), 'datasets_meta')


def check_keys(mapping, allowed, where):
    """Raise ``KeyError`` naming every key of ``mapping`` not in ``allowed``."""
    if not isinstance(mapping, dict):
        raise TypeError(f'{where} must be a mapping, got {type(mapping).__name__}: {mapping!r}')
    unknown = sorted(set(mapping) - set(allowed))
    if unknown:
        raise KeyError(f'unknown key(s) {unknown} in {where}; allowed: {", ".join(sorted(allowed))}')


def check_backend(io_backend, where):
    """Validate an ``io_backend`` mapping (``{type: disk}`` or ``{type: lmdb}``) and return its type."""
    check_keys(io_backend, ('type',), f'{where}.io_backend')
    kind = io_backend.get('type')
    if kind not in ('disk', 'lmdb'):
        raise ValueError(f"{where}.io_backend.type must be 'disk' or 'lmdb', got {kind!r}")
    return kind


# ---------------------------------------------------------------------------------------------------- protocols
def resolve_protocol(name):
    """Path of a protocol file: ``name`` as a path (relative to the current directory), else
    ``datasets_meta/<name>.yml`` of the repository."""
    if osp.isfile(name):
        return name
    bundled = osp.join(META_DIR, name if name.endswith(('.yml', '.yaml')) else f'{name}.yml')
    if osp.isfile(bundled):
        return bundled
    known = sorted(f[:-4] for f in os.listdir(META_DIR) if f.endswith('.yml')) if osp.isdir(META_DIR) else []
    raise FileNotFoundError(f'protocol {name!r} is neither a file nor one of the protocols in {META_DIR}: {known}')


def load_protocol(name, root=None, split='train', labels=None):
    """Read a protocol file and return ``(label list, source entries, cdd11 entry or None)`` of one split.

    Placeholders in paths: ``{root}`` (``root``, else the file's ``default_root``) and ``{meta}`` (the folder of
    the protocol file, for its meta-info lists).

    Args:
        name (str): Protocol name in ``datasets_meta/`` or a path to a protocol YAML.
        root (str | None): Data root substituted for ``{root}``. Default: None (the file's ``default_root``).
        split (str): Split of the file (``train``, ``test``, ...). Default: 'train'.
        labels (list[str] | None): Keep only the sources of these labels (indices stay those of the full
            list). Default: None (all).
    """
    path = resolve_protocol(name)
    with open(path, encoding='utf-8') as f:
        proto = yaml.safe_load(f)
    check_keys(proto, PROTOCOL_KEYS, f'protocol file {path}')
    splits = proto.get('splits') or {}
    if split not in splits:
        raise KeyError(f'protocol file {path} has no split {split!r}; it has {sorted(splits)}')
    entry = splits[split]
    check_keys(entry, ('sources', 'cdd11'), f'{path} splits.{split}')
    root = root if root is not None else proto.get('default_root')
    if root is None:
        raise ValueError(f'protocol {path} has no default_root: set protocol_root in the dataset options')
    meta = osp.dirname(osp.abspath(path))

    def fill(value):
        return value.replace('{root}', root).replace('{meta}', meta) if isinstance(value, str) else value

    path_keys = ('dataroot_gt', 'dataroot_lq', 'dataroot_depth', 'meta_info_file', 'root')
    sources = [{k: fill(v) if k in path_keys else v for k, v in s.items()} for s in entry.get('sources') or ()]
    cdd11 = entry.get('cdd11')
    if cdd11 is not None:
        cdd11 = {k: fill(v) if k in path_keys else v for k, v in cdd11.items()}
    all_labels = list(proto.get('labels') or ())
    if labels is not None:
        unknown = sorted(set(labels) - set(all_labels))
        if unknown:
            raise ValueError(f'protocol_labels {unknown} are not labels of protocol {path}: {all_labels}')
        sources = [s for s in sources if s.get('label') in labels]
        if cdd11 is not None:
            cdd11['categories'] = [c for c in (cdd11.get('categories') or CDD11_CATEGORIES) if c in labels]
    return all_labels, sources, cdd11


def expand_cdd11(cdd11, io_backend, where='cdd11'):
    """Source entries of a CDD-11 layout: ``<root>/clear`` + one folder (``<name>.lmdb`` in LMDB) per category."""
    check_keys(cdd11, CDD11_KEYS, where)
    if 'root' not in cdd11:
        raise KeyError(f'{where}.root is required (the folder holding clear/ and the category folders)')
    backend = cdd11.get('io_backend', io_backend)
    kind = check_backend(backend, where)
    categories = cdd11.get('categories') or CDD11_CATEGORIES
    if isinstance(categories, str):
        categories = [categories]
    for c in categories:
        if c not in CDD11_CATEGORIES:
            raise ValueError(f'unknown label {c!r} in {where}.categories; CDD-11 labels: {", ".join(CDD11_CATEGORIES)}')
    ext = '.lmdb' if kind == 'lmdb' else ''
    root = cdd11['root']
    return [{'label': c, 'dataroot_gt': osp.join(root, f'clear{ext}'), 'dataroot_lq': osp.join(root, f'{c}{ext}'),
             'io_backend': backend, 'meta_info_file': cdd11.get('meta_info_file')} for c in categories]


# -------------------------------------------------------------------------------------------------- key listing
def read_meta_info(path):
    """File names (first token of each non-empty line) of a BasicSR meta-info file."""
    if not osp.isfile(path):
        raise FileNotFoundError(f'meta-info file not found: {path}')
    with open(path, encoding='utf-8') as f:
        names = [line.split()[0] for line in f if line.strip()]
    if not names:
        raise ValueError(f'meta-info file {path} lists no images')
    return names


def _strip_ext(name):
    return osp.splitext(name)[0].replace(os.sep, '/')


def list_folder(folder, kind):
    """``{key: path}`` of the images in ``folder``: a disk folder (recursive) or an LMDB (its meta_info.txt).

    The path is the file path on disk and ``<folder>/<key>`` for an LMDB (the LMDB key is its last part).
    """
    if kind == 'lmdb':
        if not folder.endswith('.lmdb'):
            raise ValueError(f'an LMDB data root must end with .lmdb, got {folder}')
        meta = osp.join(folder, 'meta_info.txt')
        if not osp.isfile(meta):
            raise FileNotFoundError(f'LMDB {folder} not found or without meta_info.txt ({meta})')
        keys = [_strip_ext(n) for n in read_meta_info(meta)]
        return {k: f'{folder}/{k}' for k in keys}
    if not osp.isdir(folder):
        raise FileNotFoundError(f'data folder not found: {folder}')
    found = {}
    for rel in sorted(scandir(folder, recursive=True)):
        if rel.lower().endswith(IMAGE_EXTENSIONS):
            key = _strip_ext(rel)
            if key in found:
                raise ValueError(f'two images with the key {key!r} in {folder}: {found[key]} and {rel}')
            found[key] = osp.join(folder, rel)
    if not found:
        raise ValueError(f'empty folder: no images ({", ".join(IMAGE_EXTENSIONS)}) found in {folder}')
    return found


def select_keys(listing, meta_info_file, folder):
    """Keys of ``listing`` in order: all (sorted), or those named by ``meta_info_file`` (its order)."""
    if meta_info_file is None:
        return sorted(listing)
    keys = [_strip_ext(n) for n in read_meta_info(meta_info_file)]
    missing = [k for k in keys if k not in listing]
    if missing:
        raise FileNotFoundError(f'{len(missing)} image(s) listed in {meta_info_file} are not in {folder}: '
                                f'{missing[:5]}')
    return keys


class _Mapper:
    """LQ key -> GT key: identity, or ``re.fullmatch(pattern).expand(replacement)`` (``lq_to_gt``)."""

    def __init__(self, lq_to_gt, where):
        self.rule = None
        if lq_to_gt is not None:
            if not (isinstance(lq_to_gt, (list, tuple)) and len(lq_to_gt) == 2 and all(isinstance(v, str)
                                                                                       for v in lq_to_gt)):
                raise ValueError(f'{where}.lq_to_gt must be [pattern, replacement], got {lq_to_gt!r}')
            self.rule = (re.compile(lq_to_gt[0]), lq_to_gt[1])

    def __call__(self, key, where):
        if self.rule is None:
            return key
        match = self.rule[0].fullmatch(key)
        if match is None:
            raise ValueError(f'{where}: LQ image {key!r} does not match lq_to_gt pattern {self.rule[0].pattern!r}')
        return match.expand(self.rule[1])


# ------------------------------------------------------------------------------------------------------ sources
class Source:
    """One labelled, checked set of pairs (see :class:`MultiDegradationPairedDataset` for the entry keys).

    Attributes:
        label (str), label_index (int), kind ('disk' | 'lmdb'), repeat (int),
        gt_paths (list[str]), lq_paths (list[str] | None), depth_paths (list[str] | None),
        synthesis (tuple | None): parsed synthesis spec,
        roots (dict): client key ('gt', 'lq', 'depth') -> folder or LMDB path.
    """

    def __init__(self, entry, label_names, io_backend, where, cache=None):
        self._check(entry, label_names, io_backend, where)
        self._cache = {} if cache is None else cache
        self.roots = {'gt': entry['dataroot_gt']}
        self.lq_paths = self.depth_paths = None
        if entry.get('dataroot_lq') is None:
            self._list_clean(entry, where)
        else:
            self._pair(entry, where)
        del self._cache

    def _check(self, entry, label_names, io_backend, where):
        """Validate the entry's keys and values; set ``label``, ``label_index``, ``kind``, ``repeat``, ``synthesis``."""
        check_keys(entry, SOURCE_KEYS, where)
        self.label = entry.get('label')
        if self.label is None:
            raise KeyError(f'{where}.label is required')
        if self.label not in label_names:
            raise ValueError(f'unknown label {self.label!r} in {where}; the dataset labels are {list(label_names)}')
        self.label_index = list(label_names).index(self.label)
        self.kind = check_backend(entry.get('io_backend') or io_backend, where)
        self.repeat = entry.get('repeat', 1)
        if not isinstance(self.repeat, int) or isinstance(self.repeat, bool) or self.repeat < 1:
            raise ValueError(f'{where}.repeat must be an int >= 1, got {self.repeat!r}')
        if entry.get('dataroot_gt') is None:
            raise KeyError(f'{where}.dataroot_gt is required')
        synthesis = entry.get('synthesis')
        if (entry.get('dataroot_lq') is None) == (synthesis is None):
            raise ValueError(f'{where} needs exactly one of dataroot_lq (paired images) and synthesis (clean '
                             'images degraded on the fly)')
        self.synthesis = None if synthesis is None else parse_spec(synthesis)
        if entry.get('dataroot_depth') is not None and synthesis is None:
            raise ValueError(f'{where}.dataroot_depth is for synthesis sources (haze depth maps) only')
        if entry.get('lq_to_gt') is not None and synthesis is not None:
            raise ValueError(f'{where}.lq_to_gt is for paired sources only')

    def _listing(self, folder):
        """``{key: path}`` of ``folder``, listed once per dataset (sources share folders, e.g. CDD-11's clear/)."""
        if folder not in self._cache:
            self._cache[folder] = list_folder(folder, self.kind)
        return self._cache[folder]

    def _list_clean(self, entry, where):
        """Synthesis source: the clean images (``gt_paths``) and their depth maps (``depth_paths``, optional)."""
        gt_root = entry['dataroot_gt']
        gt_list = self._listing(gt_root)
        keys = select_keys(gt_list, entry.get('meta_info_file'), gt_root)
        self.gt_paths = [gt_list[k] for k in keys]
        depth_root = entry.get('dataroot_depth')
        if depth_root is not None:
            self.roots['depth'] = depth_root
            depth_list = self._listing(depth_root)
            missing = [k for k in keys if k not in depth_list]
            if missing:
                raise FileNotFoundError(f'{where}: {len(missing)} clean image(s) have no depth map in '
                                        f'{depth_root}: {missing[:5]}')
            self.depth_paths = [depth_list[k] for k in keys]

    def _pair(self, entry, where):
        """Paired source: LQ images (``lq_paths``) and their GT counterparts (``gt_paths``) by key or ``lq_to_gt``."""
        gt_root, lq_root, meta = entry['dataroot_gt'], entry['dataroot_lq'], entry.get('meta_info_file')
        self.roots['lq'] = lq_root
        gt_list, lq_list = self._listing(gt_root), self._listing(lq_root)
        keys = select_keys(lq_list, meta, lq_root)
        mapper = _Mapper(entry.get('lq_to_gt'), where)
        gt_keys = [mapper(k, where) for k in keys]
        missing = [(k, g) for k, g in zip(keys, gt_keys) if g not in gt_list]
        if missing:
            raise FileNotFoundError(f'{where}: {lq_list[missing[0][0]]} has no counterpart in {gt_root} '
                                    f'(expected key {missing[0][1]!r}); {len(missing)} such image(s): '
                                    f'{[m[0] for m in missing[:5]]}')
        if mapper.rule is None and meta is None:
            extra = sorted(set(gt_list) - set(keys))
            if extra:
                raise FileNotFoundError(f'{where}: {gt_list[extra[0]]} is missing from {lq_root}; '
                                        f'{len(extra)} image(s) of {gt_root} are missing there: {extra[:5]}')
        self.lq_paths = [lq_list[k] for k in keys]
        self.gt_paths = [gt_list[g] for g in gt_keys]

    def __len__(self):
        return len(self.gt_paths)


class IndexTable:
    """Maps a dataset index to ``(source number, item number)``.

    Sources are put in groups of equal total weight: one group per label (``balanced``) or one group holding
    everything (``proportional``). Inside a group, a source takes ``repeat x len(source)`` consecutive slots;
    a group shorter than the longest is cycled, so in balanced mode every label fills the same number of
    indices (the largest label's repeated size) and every item of every label appears at least once per pass.

    Args:
        sizes (list[int]): Items per source.
        repeats (list[int]): Repeat factor per source.
        groups (list[list[int]]): Source numbers of each group.
    """

    def __init__(self, sizes, repeats, groups):
        self.sizes = np.asarray(sizes, np.int64)
        self.groups = [np.asarray(g, np.int64) for g in groups]
        weights = [self.sizes[g] * np.asarray(repeats, np.int64)[g] for g in self.groups]
        self.starts = [np.concatenate([[0], np.cumsum(w)[:-1]]) for w in weights]
        self.totals = [int(w.sum()) for w in weights]
        self.span = max(self.totals)

    def __len__(self):
        return self.span * len(self.groups)

    def locate(self, index):
        if not 0 <= index < len(self):
            raise IndexError(f'index {index} out of range for a dataset of {len(self)} samples')
        g, j = divmod(int(index), self.span)
        j %= self.totals[g]
        k = int(np.searchsorted(self.starts[g], j, side='right')) - 1
        src = int(self.groups[g][k])
        return src, int((j - self.starts[g][k]) % self.sizes[src])


# ------------------------------------------------------------------------------------------------------ images
def decode_depth(content, path):
    """Bytes of a depth map (grey, any bit depth; larger = farther) -> float32 ``H x W x 1`` min-max normalised
    to [0, 1] over the whole image (before any crop), the scale :func:`~interir_plugin.data.degradations.haze`
    expects."""
    img = decode_image(content, path)[..., :1]
    low, high = float(img.min()), float(img.max())
    return (img - low) / max(high - low, 1e-6)
