"""Labelled paired dataset over several degradations: CDD-11, the 3-/5-task all-in-one mixtures, any list of
paired folders, and clean images degraded on the fly by :mod:`interir_plugin.data.degradations`."""
import json
import os.path as osp
import random

import cv2
import numpy as np
import torch
from basicsr.data.transforms import augment, mod_crop, paired_random_crop
from basicsr.utils import FileClient, img2tensor
from basicsr.utils.registry import DATASET_REGISTRY
from torch.utils import data

from interir_plugin.data import sources as src
from interir_plugin.data.degradations import CDD11_CATEGORIES, synthesize

#: keys BasicSR itself puts into or reads from a dataset's options (accepted, not used by the dataset).
BASICSR_KEYS = ('name', 'type', 'phase', 'scale', 'batch_size_per_gpu', 'num_worker_per_gpu', 'use_shuffle',
                'dataset_enlarge_ratio', 'prefetch_mode', 'num_prefetch_queue', 'pin_memory', 'persistent_workers')
#: keys of the training set's options read by the model class, not the dataset (accepted in the train phase):
#: ``total_batch_size`` (:func:`interir_plugin.models.unfolding_model.check_total_batch`).
MODEL_KEYS = ('total_batch_size',)
#: keys the dataset reads.
DATASET_KEYS = ('sources', 'cdd11', 'protocol', 'protocol_root', 'protocol_split', 'protocol_labels', 'labels',
                'io_backend', 'gt_size', 'use_hflip', 'use_rot', 'sampling', 'seed', 'crop_multiple',
                'fresh_synthesis', 'crop_mode', 'grey_prob', 'severity')


#: what ``crop_mode`` may be: which part of a whole image a crop to ``crop_multiple`` keeps.
CROP_MODES = ('top_left', 'center')


def crop_to_multiple(img, multiple, mode='top_left'):
    """Crop ``img`` (``H x W [x C]``) to the largest multiple of ``multiple`` in height and width.

    Args:
        img (ndarray): Image.
        multiple (int): Size multiple.
        mode (str): ``top_left`` (BasicSR's ``mod_crop``) or ``center`` (AirNet's / PromptIR's ``crop_img``: the
            top/left margins are ``(h % multiple) // 2`` and ``(w % multiple) // 2``). Default: 'top_left'.

    Returns:
        ndarray: The crop (a view).
    """
    if mode == 'top_left':
        return mod_crop(img, multiple)
    if mode != 'center':
        raise ValueError(f'crop_mode must be one of {", ".join(CROP_MODES)}, got {mode!r}')
    h, w = img.shape[:2]
    top, left = (h % multiple) // 2, (w % multiple) // 2
    return img[top:top + h - h % multiple, left:left + w - w % multiple, ...]


def grey(img):
    """``img`` (``H x W x C`` BGR float32) as a grey image of the same shape: BT.601 luminance of a 3-channel image
    (the channel mean otherwise) in every channel."""
    lum = cv2.cvtColor(img, cv2.COLOR_BGR2GRAY) if img.shape[2] == 3 else img.mean(2, dtype=img.dtype)
    return cv2.merge([lum] * img.shape[2]) if img.shape[2] > 1 else lum[..., None]


#: absolute LMDB path -> BasicSR FileClient, one per process (see :func:`lmdb_client`).
_LMDB_CLIENTS = {}


def lmdb_client(path):
    """The process's BasicSR ``FileClient`` of one LMDB, opened on first use.

    py-lmdb refuses to open one environment twice in a process (and in processes forked from it), while a
    CDD-11 LMDB tree shares ``clear.lmdb`` between 11 sources and train/val datasets may share files; so every
    dataset of the process reads through this one read-only, lock-free handle (which forked data-loader
    workers inherit and read through, as BasicSR's own LMDB handles are when the parent opened them first).
    """
    key = osp.abspath(path)
    if key not in _LMDB_CLIENTS:
        _LMDB_CLIENTS[key] = FileClient('lmdb', db_paths=[key], client_keys=['default'])
    return _LMDB_CLIENTS[key]


@DATASET_REGISTRY.register()
class MultiDegradationPairedDataset(data.Dataset):
    """Paired LQ/GT images of several degradations, each sample labelled with its degradation.

    Reads paired folders or LMDBs through BasicSR's ``FileClient`` and/or degrades clean images on the fly with
    the physics synthesiser (:mod:`interir_plugin.data.degradations`). Training samples are random ``gt_size``
    crops with BasicSR's ``paired_random_crop`` and ``augment`` (flip/rotation); validation and test samples are
    whole images (padding to a network's size multiple is the model class's job).

    Every sample is a dict:
        ``lq``, ``gt`` (float32 ``3 x H x W`` RGB tensors in [0, 1]), ``lq_path``, ``gt_path`` (str; for an LMDB
        ``<db>.lmdb/<key>``; for a synthesised LQ ``<gt_path>#<label>``), ``label`` (int: index of ``label_name``
        in :attr:`label_names`), ``label_name`` (str), ``degradation_params`` (str: JSON of the synthesis
        parameters drawn, ``{"noise.sigma": 25.0, ...}``; ``"{}"`` for stored pairs, so batches collate).

    Options (``opt``; every key is listed, an unknown key raises ``KeyError`` naming it):
        sources (list[dict] | None): Labelled sources. Each entry:
            label (str): Its degradation label (must be in the label list, see ``labels``).
            dataroot_gt (str): Folder (or ``.lmdb``) of clean images.
            dataroot_lq (str): Folder (or ``.lmdb``) of degraded images. Exactly one of ``dataroot_lq`` and
                ``synthesis``.
            synthesis (str | dict): A CDD-11 category name (``low_haze_rain``), ``{degradation: {param:
                value}}`` with degradations ``low_light, rain, snow, haze, noise, blur, jpeg`` and their function
                parameters (a number, or ``[low, high]`` drawn uniformly), applied in that physical order, or
                ``{category: <name>, renderers: {degradation: renderer(s)}}``. Low light, rain, snow and haze
                take ``renderer``: a formation model of :data:`~interir_plugin.data.renderers.RENDERERS` (then its
                parameters), or a list of them drawn per sample (docs/data.md, "Renderers").
            io_backend (dict): ``{type: disk}`` or ``{type: lmdb}``. Default: the dataset's ``io_backend``.
            meta_info_file (str): BasicSR meta-info file (first token of each line: a file name relative to the
                source's input folder, ``dataroot_lq`` for pairs, ``dataroot_gt`` for synthesis) selecting and
                ordering the items. Default: None (all images of the folder, sorted).
            repeat (int): Repeat factor in training (AirNet/PromptIR/MoCE-IR protocols). Default: 1. Must be 1
                outside training.
            lq_to_gt ([pattern, replacement]): Regex mapping an LQ key (file path relative to the folder,
                without extension) to its GT key with ``re.fullmatch(pattern).expand(replacement)``, for sets
                named differently or many-to-one (RESIDE: ``['(\\d+)_.*', '\\1']``; Rain100L: ``['rain-(.*)',
                'norain-\\1']``). Default: None (same key; then every GT image must have its LQ image).
            dataroot_depth (str): Depth maps (same keys as the clean images) for haze synthesis. Default: None
                (synthetic depth).
        cdd11 (dict | None): Shorthand for a CDD-11 layout, expanded into one paired source per category:
            root (str): Folder holding ``clear/`` and the category folders (LMDB: ``clear.lmdb``,
                ``<category>.lmdb``, as written by ``interir prepare lmdb``).
            categories (list[str]): Subset of categories. Default: all 11.
            meta_info_file (str): One name list shared by every category. Default: None.
            io_backend (dict): Default: the dataset's ``io_backend``.
        protocol (str | None): A protocol file: a path relative to the current directory, or the name of a file
            in the repository's ``datasets_meta/`` (``cdd11``, ``three_task``, ``five_task``, ``minicdd``,
            ``minicdd_loro``, ``minicdd_renderers``). It gives the ordered label list and, per split, sources
            and/or a ``cdd11`` entry. Default: None.
        protocol_root (str | None): Data root substituted for ``{root}`` in the protocol's paths. Default: None
            (the protocol's ``default_root``).
        protocol_split (str | None): Split of the protocol file. Default: None (``train`` in the train phase,
            else ``test``).
        protocol_labels (list[str] | None): Keep only the protocol's sources of these labels (indices unchanged).
            Default: None (all).
        labels (list[str] | None): The ordered label list (label ``i`` is ``labels[i]``). Default: None (the
            protocol's labels; else the 11 CDD-11 categories when ``cdd11`` is used; else the sources' labels in
            order of first appearance). A source whose label is not in the list raises ``ValueError``.
        io_backend (dict): Default backend of the sources: ``{type: disk}`` or ``{type: lmdb}``. Default:
            ``{type: disk}``.
        gt_size (int): Training crop size (required in the train phase; train only).
        use_hflip (bool): Random horizontal flips in training. Default: True.
        use_rot (bool): Random 90-degree rotations / vertical flips in training. Default: True.
        sampling (str): ``proportional`` (each source weighs ``repeat x size``) or ``balanced`` (every label
            equally often: each label's pool is cycled up to the largest one's). Train only. Default:
            'proportional'.
        seed (int): Seed of the synthesis. In validation and test (and in training with ``fresh_synthesis:
            false``) a synthesised sample depends only on ``(seed, index)``, whatever the number of workers.
            Default: 0.
        fresh_synthesis (bool): Train only: every access draws a new key from torch's generator, so the same index
            gets new degradation parameters and noise in every epoch (PromptIR draws its noise anew at every
            access); false: an index maps to the same degradation in every epoch. Torch's generator is the main
            process's (saved and restored on resume: exact with ``num_worker_per_gpu: 0``) or a worker's (seeded by
            the data loader from the main process's generator at every epoch, or once with
            ``persistent_workers``). Default: true.
        grey_prob (float): Train only: the share of synthesised samples whose clean patch is made grey (its BT.601
            luminance in every channel) before it is degraded, so that a network meets grey photos (and learns that
            an unsaturated scene is not a hazy one). Drawn with Python's ``random``, as the crops. Default: 0.
        severity (list[float] | None): Train only: ``[low, high]`` in (0, 1]; every synthesised sample's degradation
            is scaled by a strength ``s`` drawn uniformly from it, ``D' = J + s (D - J)``. For each formation model
            this is the same degradation, lighter: haze ``J t + A (1 - t)`` becomes haze of transmission
            ``1 - s (1 - t)``, an additive layer ``R`` becomes ``s R``, a gain ``G`` becomes ``1 - s (1 - G)``,
            snow of mask ``M`` becomes snow of mask ``s M``; so the network meets every degradation at many
            strengths and must measure how much there is. Drawn with Python's ``random``, as the crops; recorded
            as ``severity`` in ``degradation_params``. Default: None (``s = 1``).
        crop_multiple (int | None): Validation/test only: crop whole images to a multiple of this (the 3- and
            5-task protocols' 16). Default: None.
        crop_mode (str): Validation/test only, with ``crop_multiple``: which part is kept. ``top_left`` (BasicSR's
            ``mod_crop``: the bottom rows and right columns go) or ``center`` (as AirNet's and PromptIR's
            ``crop_img``: ``h % m // 2`` rows go at the top and the rest at the bottom, likewise for columns).
            Default: 'top_left'.
        phase (str), scale (int), name, type and BasicSR's data-loader keys (``batch_size_per_gpu``,
            ``num_worker_per_gpu``, ``use_shuffle``, ``dataset_enlarge_ratio``, ``prefetch_mode``,
            ``num_prefetch_queue``, ``pin_memory``, ``persistent_workers``): set or read by BasicSR; ``scale``
            must be 1.
        total_batch_size (int | None): Train only, read by the model class: the recipe's batch per optimizer
            step over all processes/GPUs, checked against ``world_size`` (or DataParallel's ``num_gpu``) x
            ``batch_size_per_gpu`` (:func:`interir_plugin.models.unfolding_model.check_total_batch`). Default: None.

    At least one of ``sources``, ``cdd11`` and ``protocol`` is required; they are concatenated in that order
    (protocol first). Sampling is encoded in the index space (``len(dataset)`` and the index -> pair table), so
    BasicSR's ``EnlargedSampler``, ``dataset_enlarge_ratio`` and distributed training work unchanged. Crop and
    flips use Python's ``random`` as BasicSR does (seeded per worker by BasicSR); the synthesis uses its own
    generator of ``(seed, index)`` plus, in training, a fresh key per access (``fresh_synthesis``), so validation
    and test samples are the same in every epoch and process and training samples are not repeated.

    Example (CDD-11 with a category subset, balanced)::

        type: MultiDegradationPairedDataset
        cdd11: {root: datasets/CDD-11/train, categories: [low, haze, low_haze]}
        sampling: balanced
        gt_size: 128
    """

    def __init__(self, opt):
        super().__init__()
        src.check_keys(opt, BASICSR_KEYS + MODEL_KEYS + DATASET_KEYS,
                       f'dataset options {opt.get("name", "")!r}'.rstrip())
        self.opt = opt
        self.phase = opt.get('phase', 'train')
        self.train = self.phase == 'train'
        if opt.get('scale', 1) != 1:
            raise ValueError(f'MultiDegradationPairedDataset pairs images of one size: scale must be 1, '
                             f'got {opt["scale"]}')
        self.seed = opt.get('seed') or 0
        if not isinstance(self.seed, int) or self.seed < 0:
            raise ValueError(f'seed must be a non-negative int, got {self.seed!r}')
        if not isinstance(opt.get('fresh_synthesis', True), bool):
            raise ValueError(f'fresh_synthesis must be true or false, got {opt["fresh_synthesis"]!r}')
        self.fresh_synthesis = self.train and opt.get('fresh_synthesis', True)
        self.severity = opt.get('severity')
        if self.severity is not None and not (
                isinstance(self.severity, (list, tuple)) and len(self.severity) == 2
                and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in self.severity)
                and 0 < self.severity[0] <= self.severity[1] <= 1):
            raise ValueError(f'severity must be [low, high] with 0 < low <= high <= 1, got {self.severity!r}')
        self.grey_prob = opt.get('grey_prob', 0)
        if isinstance(self.grey_prob, bool) or not isinstance(self.grey_prob, (int, float)) or \
                not 0 <= self.grey_prob <= 1:
            raise ValueError(f'grey_prob must be a number in [0, 1], got {self.grey_prob!r}')
        io_backend = opt.get('io_backend') or {'type': 'disk'}
        src.check_backend(io_backend, 'dataset')
        self._check_phase_keys(opt)

        entries, label_names = [], opt.get('labels')
        if opt.get('protocol') is not None:
            split = opt.get('protocol_split') or ('train' if self.train else 'test')
            proto_labels, proto_sources, proto_cdd11 = src.load_protocol(
                opt['protocol'], opt.get('protocol_root'), split, opt.get('protocol_labels'))
            label_names = label_names or proto_labels
            entries += [(f'protocol {opt["protocol"]} {split} source {i}', e) for i, e in enumerate(proto_sources)]
            if proto_cdd11 is not None:
                entries += [(f'protocol {opt["protocol"]} cdd11 {e["label"]}', e)
                            for e in src.expand_cdd11(proto_cdd11, io_backend)]
        elif opt.get('protocol_root') or opt.get('protocol_split') or opt.get('protocol_labels'):
            raise ValueError('protocol_root, protocol_split and protocol_labels need a protocol')
        if opt.get('cdd11') is not None:
            label_names = label_names or CDD11_CATEGORIES
            entries += [(f'cdd11 {e["label"]}', e) for e in src.expand_cdd11(opt['cdd11'], io_backend)]
        for i, entry in enumerate(opt.get('sources') or ()):
            entries.append((f'sources[{i}]', entry))
        if not entries:
            raise ValueError('MultiDegradationPairedDataset needs sources, cdd11 or protocol in its options')
        if label_names is None:
            label_names = list(dict.fromkeys(e.get('label') for _, e in entries if isinstance(e, dict)))
        self.label_names = tuple(label_names)
        cache = {}
        self.sources = [src.Source(e, self.label_names, io_backend, where, cache) for where, e in entries]
        if not self.train:
            for s, (where, _) in zip(self.sources, entries):
                if s.repeat != 1:
                    raise ValueError(f'{where}.repeat is {s.repeat}: repeat factors apply to training only')

        sampling = opt.get('sampling', 'proportional')
        if sampling == 'balanced':
            present = sorted({s.label_index for s in self.sources})
            groups = [[i for i, s in enumerate(self.sources) if s.label_index == li] for li in present]
        elif sampling == 'proportional':
            groups = [list(range(len(self.sources)))]
        else:
            raise ValueError(f"sampling must be 'balanced' or 'proportional', got {sampling!r}")
        self.table = src.IndexTable([len(s) for s in self.sources], [s.repeat for s in self.sources], groups)
        self._disk = None  # BasicSR's disk FileClient, made on first read

    def _check_phase_keys(self, opt):
        if self.train:
            if not isinstance(opt.get('gt_size'), int) or opt['gt_size'] < 1:
                raise ValueError(f'gt_size (training crop size, int) is required in the train phase, '
                                 f'got {opt.get("gt_size")!r}')
            for key in ('crop_multiple', 'crop_mode'):
                if opt.get(key) is not None:
                    raise ValueError(f'{key} applies to validation/test images only (training uses gt_size)')
        else:
            for key in ('gt_size', 'use_hflip', 'use_rot', 'sampling', 'total_batch_size', 'fresh_synthesis',
                        'grey_prob', 'severity'):
                if opt.get(key) is not None:
                    raise ValueError(f'{key} applies to training only, but this dataset is in phase {self.phase!r}')
            multiple = opt.get('crop_multiple')
            if multiple is not None and (not isinstance(multiple, int) or multiple < 1):
                raise ValueError(f'crop_multiple must be a positive int, got {multiple!r}')
            mode = opt.get('crop_mode')
            if mode is not None:
                if mode not in CROP_MODES:
                    raise ValueError(f'crop_mode must be one of {", ".join(CROP_MODES)}, got {mode!r}')
                if multiple is None:
                    raise ValueError('crop_mode needs crop_multiple (it says which part of the image the crop keeps)')

    # ---------------------------------------------------------------------------------------------------- reading
    def _read(self, k, path, client_key, decode=src.decode_image):
        s = self.sources[k]
        if s.kind == 'lmdb':
            db = s.roots[client_key]
            key = path[len(db) + 1:]  # paths of LMDB items are '<db>/<key>'; keys may hold '/'
            content = lmdb_client(db).get(key, 'default')
            if content is None:
                raise KeyError(f'LMDB key {key!r} absent from {db}')
        else:
            if self._disk is None:
                self._disk = FileClient('disk')
            try:
                content = self._disk.get(path)
            except OSError as err:
                raise OSError(f'cannot read image {path}: {err}') from err
        return decode(content, path)

    def __getitem__(self, index):
        k, item = self.table.locate(index)
        s = self.sources[k]
        gt_path = s.gt_paths[item]
        img_gt = self._read(k, gt_path, 'gt')
        if s.synthesis is None:
            lq_path = s.lq_paths[item]
            img_lq = self._read(k, lq_path, 'lq')
            if img_lq.shape != img_gt.shape:
                raise ValueError(f'GT/LQ size mismatch: {gt_path} is {img_gt.shape[:2]}, {lq_path} is '
                                 f'{img_lq.shape[:2]}')
            pair = [img_gt, img_lq]
        else:
            lq_path = f'{gt_path}#{s.label}'
            pair = [img_gt]
            if s.depth_paths is not None:
                depth = self._read(k, s.depth_paths[item], 'depth', src.decode_depth)
                if depth.shape[:2] != img_gt.shape[:2]:
                    raise ValueError(f'GT/depth size mismatch: {gt_path} is {img_gt.shape[:2]}, '
                                     f'{s.depth_paths[item]} is {depth.shape[:2]}')
                pair.append(depth)

        if self.train:
            # BasicSR's crop and flips on the pair (or the clean image and its depth): same window for both
            gt_size = self.opt['gt_size']
            if len(pair) == 2:
                pair = list(paired_random_crop(pair[0], pair[1], gt_size, 1, gt_path))
            else:
                pair = [paired_random_crop(pair[0], pair[0], gt_size, 1, gt_path)[0]]
            pair = augment(pair, self.opt.get('use_hflip', True), self.opt.get('use_rot', True))
            pair = pair if isinstance(pair, list) else [pair]
        elif self.opt.get('crop_multiple'):
            multiple = self.opt['crop_multiple']
            if min(img_gt.shape[:2]) < multiple:
                raise ValueError(f'{gt_path} ({img_gt.shape[0]} x {img_gt.shape[1]}) is smaller than crop_multiple '
                                 f'{multiple}')
            pair = [crop_to_multiple(p, multiple, self.opt.get('crop_mode') or 'top_left') for p in pair]

        params = {}
        if s.synthesis is not None:
            depth = pair[1][..., 0] if len(pair) == 2 else None
            # a fresh key per access in training (torch's generator: restored on resume), none in val/test
            draw = int(torch.randint(0, 2 ** 62, ())) if self.fresh_synthesis else None
            if self.grey_prob and pair[0].ndim == 3 and random.random() < self.grey_prob:
                pair[0] = grey(pair[0])
            img_lq, params = synthesize(pair[0], s.synthesis, self.seed, index, depth=depth, draw=draw)
            if self.severity is not None:  # the same degradation, lighter: J + s (D - J)
                strength = random.uniform(*self.severity)
                img_lq = pair[0] + np.float32(strength) * (img_lq - pair[0])
                params['severity'] = strength
            pair = [pair[0], img_lq]
        img_gt, img_lq = img2tensor(pair, bgr2rgb=True, float32=True)
        return {'lq': img_lq, 'gt': img_gt, 'lq_path': lq_path, 'gt_path': gt_path, 'label': s.label_index,
                'label_name': s.label, 'degradation_params': json.dumps(params, sort_keys=True)}

    def __len__(self):
        return len(self.table)
