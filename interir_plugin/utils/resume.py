"""Resume fidelity: a resumed run draws the same batches and random numbers as the run it continues.

BasicSR's trainer saves the optimizers and schedulers at ``<iter>.state``; on resume it re-creates the data loader
and replays the interrupted epoch from its first batch, with freshly seeded generators, so a killed and resumed run
trains on other batches and other random crops than an uninterrupted one. Two pieces fix that:

- :func:`rng_states` / :func:`restore_rng_states`: Python's ``random``, NumPy's global generator and torch's CPU (and
  CUDA) generators of every rank, saved in the training state (``rng``, one entry per rank) in a form that loads
  with ``weights_only=True``.
- :class:`ResumableSampler`: BasicSR's ``EnlargedSampler`` (same order: a permutation seeded by the epoch) that,
  told where a run stopped (:func:`schedule_resume`), skips the batches of the interrupted epoch that were already
  consumed and restores the saved generator states just before it hands out the first index, that is after the
  data loader drew its base seed and before any sample is read, the moment the saved states were taken at.

The position in the epoch follows from the state's ``epoch`` and ``iter``: BasicSR counts iterations from 1 and an
epoch has ``len(sampler) // batch_size`` batches (its train loader drops the last incomplete batch), so iteration
``iter`` of epoch ``epoch`` has consumed ``iter - epoch * batches_per_epoch`` batches of it.

Exact on one process with ``num_worker_per_gpu: 0`` (the samples are read in the training process). With
workers, the batches are the same but the workers' generators are re-seeded by BasicSR at every epoch, so the
random augmentations of the rest of the interrupted epoch differ; later epochs are the same again.
"""
import random
import weakref

import numpy as np
import torch
from basicsr.data.data_sampler import EnlargedSampler
from basicsr.utils import get_root_logger
from basicsr.utils.dist_util import get_dist_info

#: The training sampler created last in this process (BasicSR's pipeline creates one per run, before the model).
_LATEST = {'sampler': None}


def rng_states():
    """The states of this process's random generators (Python, NumPy, torch CPU and CUDA), ``weights_only``-safe."""
    np_state = np.random.get_state()
    return {'python': random.getstate(),
            'numpy': (np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *np_state[2:]),
            'torch': torch.get_rng_state(),
            'cuda': torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []}


def _host_bytes(state):
    """A generator state as torch's setters want it: a CPU ``uint8`` tensor, wherever the state was mapped to."""
    return state.detach().to(device='cpu', dtype=torch.uint8)


def restore_rng_states(states):
    """Set this process's random generators to ``states`` (from :func:`rng_states`).

    The states may come from a training state loaded onto a GPU (BasicSR maps a resume state to the current CUDA
    device): every tensor is copied to the CPU first (the generators' setters accept CPU byte tensors only, and NumPy
    reads host memory). CUDA generator states are restored on as many devices as this process has and the state
    holds; none without CUDA.

    Args:
        states (dict): ``python``, ``numpy``, ``torch`` and ``cuda`` entries as written by :func:`rng_states`.
    """
    version, internal, gauss = states['python']
    random.setstate((version, tuple(internal), gauss))
    name, key, *rest = states['numpy']
    np.random.set_state((name, key.detach().cpu().numpy().astype(np.uint32), *rest))
    torch.set_rng_state(_host_bytes(states['torch']))
    cuda = list(states['cuda'] or ())
    if cuda and torch.cuda.is_available():
        count = min(len(cuda), torch.cuda.device_count())
        if count != len(cuda):
            get_root_logger().warning(f'resume: the state holds the CUDA generators of {len(cuda)} devices, this '
                                      f'process sees {torch.cuda.device_count()}; the first {count} are restored')
        for index in range(count):
            torch.cuda.set_rng_state(_host_bytes(cuda[index]), index)


def gathered_rng_states(dist):
    """:func:`rng_states` of every rank, in rank order (a collective call under DDP: every rank must make it).

    Args:
        dist (bool): Whether the run is distributed (``opt['dist']``).

    Returns:
        list[dict]: One state per rank.
    """
    own = rng_states()
    if not dist:
        return [own]
    gathered = [None] * torch.distributed.get_world_size()
    torch.distributed.all_gather_object(gathered, own)
    return gathered


def loader_batch_size(opt):
    """Batch size of BasicSR's training data loader for ``opt`` (``build_dataloader``'s rule)."""
    per_gpu = opt['datasets']['train']['batch_size_per_gpu']
    return per_gpu if opt.get('dist', False) else per_gpu * max(opt.get('num_gpu', 0) or 0, 1)


class ResumableSampler(EnlargedSampler):
    """BasicSR's ``EnlargedSampler`` that can continue an epoch where a saved run stopped.

    Installed in place of ``basicsr.train.EnlargedSampler`` by :func:`interir_plugin.compat.patch_resumable_sampler`,
    so BasicSR's pipeline builds it for the training set; without a scheduled resume it yields exactly what
    ``EnlargedSampler`` yields. Arguments as ``EnlargedSampler``.
    """

    def __init__(self, dataset, num_replicas, rank, ratio=1):
        super().__init__(dataset, num_replicas, rank, ratio)
        self._resume = None
        _LATEST['sampler'] = weakref.ref(self)

    def resume_at(self, epoch, current_iter, batch_size, rng=None):
        """Make epoch ``epoch`` skip what iterations up to ``current_iter`` consumed, and restore ``rng`` then.

        Args:
            epoch (int): Epoch of the saved state.
            current_iter (int): Iteration of the saved state (from 1).
            batch_size (int): Batch size of the data loader.
            rng (dict | None): This rank's :func:`rng_states`, restored when the epoch starts. Default: None.

        Returns:
            int: Batches of ``epoch`` that will be skipped.
        """
        per_epoch = len(self) // batch_size
        done = current_iter - epoch * per_epoch
        if not 0 <= done <= per_epoch:
            get_root_logger().warning(
                f'resume: iteration {current_iter} is not in epoch {epoch} of {per_epoch} batches (the data set or '
                'batch size changed?); the epoch starts from its first batch')
            done = 0
        self._resume = {'epoch': epoch, 'skip': done * batch_size, 'rng': rng}
        return done

    def __iter__(self):
        indices = super().__iter__()
        resume = self._resume
        if resume is None or resume['epoch'] != self.epoch:
            return indices
        self._resume = None
        if resume['rng'] is not None:
            restore_rng_states(resume['rng'])
        return iter(list(indices)[resume['skip']:])


def schedule_resume(opt, state):
    """Prepare the training sampler of this process to continue from training state ``state``.

    Args:
        opt (dict): BasicSR options of the run (``datasets.train.batch_size_per_gpu``, ``num_gpu``, ``dist``).
        state (dict): Loaded ``<iter>.state`` (``epoch``, ``iter``, and ``rng`` if written by the plugin).

    Returns:
        bool: Whether a training sampler was found and scheduled.
    """
    logger = get_root_logger()
    rank, world_size = get_dist_info()
    rng = state.get('rng')
    if rng is not None and len(rng) != world_size:
        logger.warning(f'resume: the state holds random generator states of {len(rng)} processes, this run has '
                       f'{world_size}; the generators are not restored')
        rng = None
    own_rng = None if rng is None else rng[rank]
    ref = _LATEST['sampler']
    sampler = ref() if ref is not None else None
    if sampler is None or 'train' not in (opt.get('datasets') or {}):
        if own_rng is not None:
            restore_rng_states(own_rng)
        logger.warning('resume: no ResumableSampler in this process; the interrupted epoch restarts from its first '
                       'batch')
        return False
    skipped = sampler.resume_at(state['epoch'], state['iter'], loader_batch_size(opt), own_rng)
    logger.info(f'resume: epoch {state["epoch"]} continues after its first {skipped} batches'
                + ('' if own_rng is not None else ' (no generator states in the training state)'))
    return True
