"""Model class for multi-stage (deep unfolding) restoration networks on BasicSR's trainer."""
import contextlib
import difflib
import math
import os.path as osp
import re
from collections import OrderedDict

import torch
from basicsr.losses import build_loss
from basicsr.metrics import calculate_metric
from basicsr.models.sr_model import SRModel
from basicsr.utils import get_root_logger, imwrite, tensor2img
from basicsr.utils.dist_util import master_only
from basicsr.utils.registry import MODEL_REGISTRY

from interir_plugin.models.time_budget import TimeBudgetMixin, check_budget_options
from interir_plugin.utils.checkpoint import atomic_torch_save, bare_state_dict, load_weights
from interir_plugin.utils.metrics import HARM, harmed, label_summary, psnr_metric, summary_rows, write_label_metrics_csv
from interir_plugin.utils.padding import crop_to, pad_for_network
from interir_plugin.utils.presence import presence_targets
from interir_plugin.utils.resume import gathered_rng_states, schedule_resume
from interir_plugin.utils.tiling import check_tile_options, self_ensemble_x8, tiled_apply

#: Keys of ``train:`` read by BasicSR's trainer and SRModel (first) and by this model (second); see the model
#: docstring. Any other key raises, so a typo never goes unnoticed.
TRAIN_KEYS = ('ema_decay', 'optim_g', 'scheduler', 'total_iter', 'warmup_iter', 'pixel_opt',
              'stage_weights', 'edge_opt', 'frequency_opt', 'clamp_outputs', 'grad_clip', 'max_nonfinite_steps',
              'bf16', 'time_budget', 'presence_weight', 'presence_lr_scale', 'micro_batches', 'mixup')
#: Keys of ``val:`` read by BasicSR (first) and by this model (second).
VAL_KEYS = ('val_freq', 'save_img', 'metrics', 'pbar', 'suffix',
            'tile', 'tile_overlap', 'self_ensemble', 'val_seconds')
#: Keys BasicSR's SRModel reads that this model refuses, with the reason.
REFUSED_KEYS = {'perceptual_opt': 'perceptual losses are not supported by UnfoldingRestorationModel '
                                  '(use pixel_opt, edge_opt, frequency_opt)'}


def _unknown_key_error(section, key, known):
    close = difflib.get_close_matches(key, known, n=1)
    hint = f' (did you mean {close[0]!r}?)' if close else ''
    return ValueError(f'unknown option {section}.{key}{hint}; UnfoldingRestorationModel and BasicSR read only '
                      f'{section}: {", ".join(known)}')


def check_options(opt):
    """Validate the ``train:`` and ``val:`` sections of an option dict; raise ``ValueError`` naming the key.

    Args:
        opt (dict): Parsed BasicSR options.
    """
    for section, known in (('train', TRAIN_KEYS), ('val', VAL_KEYS)):
        sub = opt.get(section)
        if sub is None:
            continue
        if not isinstance(sub, dict):
            raise ValueError(f'option {section}: must be a mapping, got {type(sub).__name__}')
        for key in sub:
            if key in REFUSED_KEYS:
                raise ValueError(f'option {section}.{key}: {REFUSED_KEYS[key]}')
            if key not in known:
                raise _unknown_key_error(section, key, known)
    train = opt.get('train') or {}
    weights = train.get('stage_weights')
    if weights is not None:
        ok = isinstance(weights, (list, tuple)) and len(weights) > 0 and all(
            isinstance(w, (int, float)) and not isinstance(w, bool) and math.isfinite(w) and w >= 0 for w in weights)
        if not ok or not any(w > 0 for w in weights):
            raise ValueError(f'option train.stage_weights must be null or a non-empty list of non-negative finite '
                             f'numbers with at least one positive, got {weights!r}')
    clip = train.get('grad_clip')
    if clip is not None and (isinstance(clip, bool) or not isinstance(clip, (int, float)) or not clip > 0):
        raise ValueError(f'option train.grad_clip must be null or a positive number, got {clip!r}')
    max_bad = train.get('max_nonfinite_steps', 10)
    if isinstance(max_bad, bool) or not isinstance(max_bad, int) or max_bad < 1:
        raise ValueError(f'option train.max_nonfinite_steps must be a positive int, got {max_bad!r}')
    for section, key in (('train', 'bf16'), ('train', 'clamp_outputs'), ('val', 'self_ensemble')):
        value = (opt.get(section) or {}).get(key, False)
        if not isinstance(value, bool):
            raise ValueError(f'option {section}.{key} must be true or false, got {value!r}')
    micro = train.get('micro_batches', 1)
    if isinstance(micro, bool) or not isinstance(micro, int) or micro < 1:
        raise ValueError(f'option train.micro_batches must be a positive int, got {micro!r}')
    check_mixup(train.get('mixup'))
    for key, default in (('presence_weight', 0.5), ('presence_lr_scale', 10)):
        value = train.get(key, default)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not (math.isfinite(value) and value > 0):
            raise ValueError(f'option train.{key} must be a positive number, got {value!r}')
    if opt.get('train') is not None and not train.get('pixel_opt'):
        raise ValueError('option train.pixel_opt is required (e.g. {type: CharbonnierLoss, eps: 1.0e-6}); '
                         'edge_opt and frequency_opt are added to it')
    check_budget_options(opt)
    val = opt.get('val') or {}
    check_tile_options(val.get('tile'), val.get('tile_overlap', 32))
    if opt.get('is_train') and 'train' in (opt.get('datasets') or {}):
        check_total_batch(opt)


def check_mixup(mixup):
    """Validate ``train.mixup``: null, or ``{from_iter: int >= 1, beta: positive number}``; raise naming the key."""
    if mixup is None:
        return
    if not isinstance(mixup, dict):
        raise ValueError(f'option train.mixup must be null or a mapping {{from_iter: N, beta: b}}, got {mixup!r}')
    for key in mixup:
        if key not in ('from_iter', 'beta'):
            raise _unknown_key_error('train.mixup', key, ('from_iter', 'beta'))
    start, beta = mixup.get('from_iter'), mixup.get('beta')
    if isinstance(start, bool) or not isinstance(start, int) or start < 1:
        raise ValueError(f'option train.mixup.from_iter must be an int >= 1, got {start!r}')
    if isinstance(beta, bool) or not isinstance(beta, (int, float)) or not (math.isfinite(beta) and beta > 0):
        raise ValueError(f'option train.mixup.beta must be a positive number, got {beta!r}')


def check_total_batch(opt):
    """The images one optimizer step sees, checked against ``datasets.train.total_batch_size`` when it is set.

    ``batch_size_per_gpu`` is per process under a launcher (torchrun, slurm: ``world_size`` processes) and per GPU
    of ``DataParallel`` without one (``num_gpu`` > 1, ``num_gpu: auto`` included): a file that gives a protocol's
    total batch as ``batch_size_per_gpu`` trains with N times that batch on N GPUs (and N times the epochs in the
    same ``total_iter``). ``total_batch_size`` states the protocol's batch; a run whose processes or GPUs give
    another raises ``ValueError`` naming both numbers and the ``batch_size_per_gpu`` that would match. Without it,
    a run on several processes or GPUs logs a warning with its total batch, and so does an experiment name whose
    ``_B<n>G<m>_`` tag gives another total.

    Args:
        opt (dict): Parsed BasicSR options (``datasets.train``, ``num_gpu``, ``dist``, ``world_size``, ``name``).

    Returns:
        int: Images per optimizer step over all processes.
    """
    train = opt['datasets']['train']
    per_gpu = train['batch_size_per_gpu']
    if opt.get('dist', False):
        count, what = int(opt.get('world_size', 1)), 'processes'
    else:
        count, what = max(int(opt.get('num_gpu', 0) or 0), 1), 'GPUs of DataParallel (num_gpu, no launcher)'
    total = count * per_gpu
    stated = train.get('total_batch_size')
    if stated is not None:
        if isinstance(stated, bool) or not isinstance(stated, int) or stated < 1:
            raise ValueError(f'option datasets.train.total_batch_size must be a positive int, got {stated!r}')
        if stated != total:
            fix = (f'set datasets.train.batch_size_per_gpu: {stated // count} (= {stated} / {count})'
                   if stated % count == 0 else f'{stated} is not a multiple of {count}: run on a number of '
                   f'{what.split(" ")[0]} that divides it')
            raise ValueError(f'option datasets.train.total_batch_size is {stated}, but this run steps on {total} '
                             f'images: {count} {what} x batch_size_per_gpu {per_gpu}. To keep the recipe, {fix} '
                             f'(e.g. --force_yml datasets:train:batch_size_per_gpu=...); to change it, change '
                             f'total_batch_size and total_iter too')
        return total
    logger = get_root_logger()
    if count > 1:
        logger.warning(f'total batch {total} = {count} {what} x batch_size_per_gpu {per_gpu}; set '
                       'datasets.train.total_batch_size to the recipe\'s batch to have it checked')
    tag = re.search(r'_B(\d+)G(\d+)_', str(opt.get('name', '')))
    if tag and int(tag.group(1)) != total:
        logger.warning(f'experiment name {opt["name"]} says total batch {tag.group(1)} on {tag.group(2)} GPU(s); '
                       f'this run steps on {total} images ({count} {what} x batch_size_per_gpu {per_gpu})')
    return total


@MODEL_REGISTRY.register()
class UnfoldingRestorationModel(TimeBudgetMixin, SRModel):
    """Restoration model for networks that return one image per stage (InterIR, DGUNet, DGUNet+), or one image.

    Training sums, over the stage outputs ``o_k`` (first -> final), ``w_k * (pixel(o_k, gt) + edge(o_k, gt) +
    frequency(o_k, gt))``. Inputs are reflect-padded to ``net_g.size_multiple`` and ``net_g.min_size`` (1 if
    absent) and outputs cropped back, in training and testing. Testing uses the final output, optionally tiled
    and/or x8 self-ensembled.
    Validation reports every metric per ``label_name`` of the batches (degradation type), the mean over labels
    (the headline number of multi-degradation protocols, logged and tracked as BasicSR's metric) and the mean
    over images, and writes them as ``<path.log>/metrics/<dataset>_<iter>.csv`` (``experiments/<name>/`` in
    training, ``results/<name>/`` in testing). With a PSNR metric in ``val.metrics`` it also reports the **harm rate**
    (column ``harm``: the share of images whose output PSNR is more than 0.5 dB below the input's,
    :data:`~interir_plugin.utils.metrics.HARM_MARGIN_DB`), per label and over labels; it is logged and written, not
    tracked as a best value. Checkpoints are written atomically and loaded with
    ``weights_only=True``.

    Option keys read (besides BasicSR's ``network_g``, ``num_gpu``, ``dist``, ``is_train``, ``path.*``; the
    ``train:``/``val:`` keys are checked, an unknown one raises; see :data:`TRAIN_KEYS`, :data:`VAL_KEYS`):

    - ``train.ema_decay``, ``optim_g``, ``scheduler``, ``total_iter``, ``warmup_iter``: BasicSR's. ``optim_g.type``
      may name any ``torch.optim`` optimizer (Adam, AdamW, ...).
    - ``train.pixel_opt`` (required): pixel loss, e.g. ``{type: CharbonnierLoss, eps: 1.0e-6}`` (= DGUNet's
      Charbonnier with eps 1e-3).
    - ``train.edge_opt``, ``train.frequency_opt``: optional extra terms (``EdgeLoss``, ``FrequencyLoss``, or any
      registered loss taking ``(pred, target)``). Default: None.
    - ``train.stage_weights``: one non-negative weight per stage output, or null for 1 each (DGUNet). The
      length must equal the number of outputs, checked on the first step. Default: None.
    - ``train.clamp_outputs``: clamp stage outputs to [0, 1] before the losses (DGUNet's denoising). Default: false.
    - ``train.grad_clip``: maximum global L2 norm of the gradients, null for no clipping. Default: None.
    - ``train.max_nonfinite_steps``: a step whose loss (or clipped gradient norm) is not finite is skipped (no
      optimizer step, no EMA update), counted (``nonfinite_steps`` in the log) and warned about; this many in a
      row stop training with an error. Default: 10.
    - ``train.bf16``: bfloat16 autocast of the network's forward in training, on CUDA and on the CPU (torch's CPU
      autocast supports bfloat16); losses and testing stay float32. Default: false.
    - ``train.time_budget``: seconds of training the run lasts (validation not counted), null for BasicSR's
      ``total_iter`` steps; the schedule is spread over the seconds and the run ends with ``net_g_latest.pth``
      (:mod:`interir_plugin.models.time_budget`). Default: None.
    - ``train.presence_weight``: for networks with a degradation recogniser (InterIR's and PlainResidualNet's
      physical head with ``recognise: true``): the head's presence gates follow the batch's ``label_name``
      (:func:`~interir_plugin.utils.presence.presence_targets`, teacher forcing) and this weight times the
      recogniser's binary cross-entropy against them (``PresenceLoss``, built from BasicSR's ``LOSS_REGISTRY``)
      joins the loss (``l_presence``). Default: 0.5.
    - ``train.presence_lr_scale``: the recogniser's parameters form their own optimizer group with this many times
      ``optim_g.lr`` (schedules scale both groups alike): a small classifier of fixed image statistics, it needs a
      larger step than the network (docs/interir.md). Default: 10.
    - ``train.micro_batches``: split each process's batch into this many chunks, forward and backward one at a time
      and step once: the same gradient as the whole batch (for mean-reduced losses and networks without batch
      statistics; the recogniser's batch norm standardises each chunk by its own statistics) with a chunk's
      activations in memory; under DDP the gradients are all-reduced once per step. Default: 1.
    - ``train.mixup``: null, or ``{from_iter: N, beta: b}``: from iteration ``N`` on, MixUp of each batch
      (:meth:`mix_batch`, DGUNet's and MPRNet's denoising recipe); refused for networks with presence gates.
      Default: None.
    - ``train.ema_decay``: BasicSR's EMA of the parameters; here the buffers (batch-norm running statistics) are
      copied too (:meth:`model_ema`).
    - ``datasets.train.total_batch_size``: checked against the run's processes/GPUs x ``batch_size_per_gpu``
      (:func:`check_total_batch`). Default: None.
    - ``val.metrics``, ``val.save_img``, ``val.pbar``, ``val.suffix``, ``val.val_freq``: BasicSR's.
    - ``val.val_seconds``: with ``val_freq: 1``, validate every this many seconds of training (and when
      ``time_budget`` is spent), appending to ``metrics/curve_<dataset>.csv``; null for BasicSR's ``val_freq``.
      Default: None.
    - ``val.tile``: tile side for tiled inference (a multiple of ``size_multiple``), null for whole images.
      Default: None.
    - ``val.tile_overlap``: overlap of neighbouring tiles (``tile >= 2 * tile_overlap``). Default: 32.
    - ``val.self_ensemble``: average over the 8 flips/rotations. Default: false.

    Saved images go to ``visualization/<dataset>/<label>/<image>_<iter or suffix or name>.png`` (the label level
    only for labelled data; CDD-11 repeats file names across categories).

    Args:
        opt (dict): BasicSR options.
    """

    def __init__(self, opt):
        check_options(opt)
        super().__init__(opt)
        val = opt.get('val') or {}
        self.tile = val.get('tile')
        self.tile_overlap = val.get('tile_overlap', 32)
        self.self_ensemble = val.get('self_ensemble', False)
        check_tile_options(self.tile, self.tile_overlap, self.size_multiple)

    @property
    def size_multiple(self):
        """Input height/width multiple required by ``net_g`` (its ``size_multiple`` attribute, else 1)."""
        multiple = getattr(self.get_bare_model(self.net_g), 'size_multiple', 1)
        if isinstance(multiple, bool) or not isinstance(multiple, int) or multiple < 1:
            raise ValueError(f'network_g {self.opt["network_g"]["type"]}: size_multiple must be a positive int, '
                             f'got {multiple!r}')
        return multiple

    # ----------------------------------------------------------------------------------------------- training
    def init_training_settings(self):
        train_opt = self.opt['train']
        self.presence_weight = float(train_opt.get('presence_weight', 0.5))
        self.presence_lr_scale = float(train_opt.get('presence_lr_scale', 10))
        self.cri_presence = build_loss({'type': 'PresenceLoss', 'loss_weight': self.presence_weight})
        super().init_training_settings()  # EMA, pixel loss, optimizer (get_optimizer below), scheduler
        self.cri_edge = build_loss(train_opt['edge_opt']).to(self.device) if train_opt.get('edge_opt') else None
        self.cri_freq = (build_loss(train_opt['frequency_opt']).to(self.device)
                         if train_opt.get('frequency_opt') else None)
        weights = train_opt.get('stage_weights')
        self.stage_weights = None if weights is None else [float(w) for w in weights]
        self.clamp_outputs = train_opt.get('clamp_outputs', False)
        self.grad_clip = train_opt.get('grad_clip')
        self.max_nonfinite_steps = train_opt.get('max_nonfinite_steps', 10)
        self.bf16 = train_opt.get('bf16', False)
        self.micro_batches = train_opt.get('micro_batches', 1)
        self.mixup = train_opt.get('mixup')
        if self.mixup is not None and getattr(self.get_bare_model(self.net_g), 'recognises', False):
            raise ValueError(f'option train.mixup: network_g {self.opt["network_g"]["type"]} learns presence gates '
                             'from each image\'s label, and a mixed image has two (set network_g.recognise: false or '
                             'train.mixup: null)')
        self.nonfinite_steps = 0  # total skipped steps
        self.nonfinite_in_a_row = 0
        self.init_time_budget()

    def model_ema(self, decay=0.999):
        """BasicSR's exponential moving average of the parameters, plus a copy of every buffer.

        BasicSR averages parameters only, so ``net_g_ema`` would keep the buffers it was built with: the recogniser's
        batch-norm running mean and variance (:class:`~interir_plugin.archs.interir_arch.DegradationRecogniser`)
        would stay 0 and 1, and validation, ``params_ema`` and ``interir test`` would decide the presence gates on
        unstandardised statistics. The buffers are copied, not averaged (as timm's ``ModelEmaV3(exclude_buffers=True)``
        does): running statistics are averages already, and integer counters cannot be averaged.

        Args:
            decay (float): Weight of the old average; 0 copies ``net_g``. Default: 0.999.
        """
        super().model_ema(decay)
        own = dict(self.get_bare_model(self.net_g).named_buffers())
        with torch.no_grad():
            for name, buf in self.net_g_ema.named_buffers():
                buf.copy_(own[name])

    def get_optimizer(self, optim_type, params, lr, **kwargs):
        """Any ``torch.optim`` optimizer by class name (BasicSR 1.4.2 knows only Adam); a network with a degradation
        recogniser gets it as a second parameter group at ``lr * train.presence_lr_scale``."""
        cls = getattr(torch.optim, optim_type, None)
        if not (isinstance(cls, type) and issubclass(cls, torch.optim.Optimizer)):
            raise ValueError(f'option train.optim_g.type: {optim_type!r} is not a torch.optim optimizer')
        bare = self.get_bare_model(self.net_g)
        if getattr(bare, 'recognises', False):  # the recogniser's own group (train.presence_lr_scale)
            params = bare.presence_param_groups(params, lr, self.presence_lr_scale)
        return cls(params, lr, **kwargs)

    def feed_data(self, data):
        super().feed_data(data)
        self.label_names = data.get('label_name')

    def _presence(self):
        """``(targets, known)`` of the batch's labels for a network with a recogniser, else None."""
        if not getattr(self.get_bare_model(self.net_g), 'recognises', False):
            return None
        if self.label_names is None:
            raise ValueError(f'network_g {self.opt["network_g"]["type"]} gates its head by degradation presence, '
                             'which training learns from the batches\' label_name; this data set gives none '
                             '(set network_g.recognise: false)')
        return presence_targets(self.label_names, self.device)

    def run_network(self, net, x, presence=None):
        """Run ``net`` on ``x`` padded to its size multiple and minimum size; return the stage outputs cropped back
        (with ``presence`` targets: ``(outputs, presence_logits)``, see InterIR's teacher forcing)."""
        padded, size = pad_for_network(x, self.get_bare_model(net))
        if presence is not None:
            out, logits = net(padded, presence=presence)
            return self._check_outputs(out, size), logits
        return self._check_outputs(net(padded), size)

    def _check_outputs(self, out, size):
        outputs = list(out) if isinstance(out, (list, tuple)) else [out]
        if not outputs or not all(torch.is_tensor(o) for o in outputs):
            raise TypeError(f'network_g {self.opt["network_g"]["type"]} must return a tensor or a non-empty list '
                            f'of tensors, got {type(out).__name__}')
        return crop_to(outputs, size)

    def compute_losses(self, outputs, gt):
        """Weighted sum over stage outputs of the pixel, edge and frequency terms.

        Args:
            outputs (list[Tensor]): Stage outputs, first -> final.
            gt (Tensor): Target.

        Returns:
            tuple: ``(total, loss_dict)``; ``loss_dict`` holds each term summed over stages and ``l_total``.
        """
        weights = self.stage_weights if self.stage_weights is not None else [1.0] * len(outputs)
        if len(weights) != len(outputs):
            raise ValueError(f'option train.stage_weights has {len(weights)} entries but network_g '
                             f'{self.opt["network_g"]["type"]} returns {len(outputs)} stage outputs')
        loss_dict = OrderedDict()
        total = 0
        for name, cri in (('l_pix', self.cri_pix), ('l_edge', self.cri_edge), ('l_freq', self.cri_freq)):
            if cri is None:
                continue
            term = 0
            for w, out in zip(weights, outputs):
                if w:
                    out = out.float()
                    term = term + w * cri(out.clamp(0, 1) if self.clamp_outputs else out, gt)
            loss_dict[name] = term
            total = total + term
        loss_dict['l_total'] = total
        return total, loss_dict

    def _forward_backward(self, presence):
        """Forward, losses and backward of the batch, in ``train.micro_batches`` chunks; returns the losses (detached,
        weighted means over the chunks: the full batch's means for mean-reduced losses)."""
        batch = self.lq.shape[0]
        count = min(self.micro_batches, batch)
        parts = [self.lq.chunk(count), self.gt.chunk(count)]
        if presence is not None:
            parts += [presence[0].chunk(count), presence[1].chunk(count)]
        loss_dict, finals = OrderedDict(), []
        for i, chunk in enumerate(zip(*parts)):
            lq, gt, targets = chunk[0], chunk[1], chunk[2:] or None
            # under DDP the gradients are all-reduced once, with the last chunk's backward
            last = i == count - 1
            sync = contextlib.nullcontext() if last or not hasattr(self.net_g, 'no_sync') else self.net_g.no_sync()
            with sync:
                with torch.autocast(device_type=self.device.type, dtype=torch.bfloat16, enabled=self.bf16):
                    if targets is None:
                        outputs = self.run_network(self.net_g, lq)
                    else:
                        outputs, logits = self.run_network(self.net_g, lq, targets[0])
                l_total, parts_dict = self.compute_losses(outputs, gt)
                if targets is not None:
                    parts_dict['l_presence'] = self.cri_presence(logits, *targets)
                    l_total = l_total + parts_dict['l_presence']
                    parts_dict['l_total'] = l_total
                share = lq.shape[0] / batch
                (l_total * share if count > 1 else l_total).backward()
            finals.append(outputs[-1].detach())
            for name, value in parts_dict.items():
                value = value.detach() * share if count > 1 else value.detach()
                loss_dict[name] = value if name not in loss_dict else loss_dict[name] + value
        self.output = finals[0] if count == 1 else torch.cat(finals)
        return loss_dict

    def mix_batch(self, gt, lq):
        """MixUp of a training batch (``train.mixup``; MPRNet's and DGUNet's denoising): every pair becomes
        ``lam * pair + (1 - lam) * another pair of the batch`` (a random permutation), ``lam ~ Beta(beta, beta)`` per
        pair, the same ``lam`` for input and target. Drawn from torch's CPU generator (restored on resume). A batch
        of one is mixed with itself: unchanged.

        Args:
            gt (Tensor): ``B x C x H x W`` targets.
            lq (Tensor): ``B x C x H x W`` inputs.

        Returns:
            tuple[Tensor, Tensor]: The mixed targets and inputs.
        """
        n, beta = gt.shape[0], float(self.mixup['beta'])
        order = torch.randperm(n)
        lam = torch.distributions.Beta(torch.tensor(beta), torch.tensor(beta)).sample((n,)).view(n, 1, 1, 1)
        order, lam = order.to(gt.device), lam.to(device=gt.device, dtype=gt.dtype)
        return lam * gt + (1 - lam) * gt[order], lam * lq + (1 - lam) * lq[order]

    def _agreed_finite(self, *values):
        """Whether every one of ``values`` is finite on every process (all ranks must skip together under DDP).

        The one host synchronisation of the check (``.item()``), called after ``backward`` so that it does not stall
        the device queue before the backward pass is enqueued (as ``torch.amp.GradScaler`` checks for inf once, after
        unscaling).
        """
        bad = sum((~torch.isfinite(v.detach())).any().float() for v in values).reshape(1)
        if self.opt.get('dist', False):
            torch.distributed.all_reduce(bad)
        return bad.item() == 0

    def _skip_step(self, current_iter, reason):
        self.optimizer_g.zero_grad(set_to_none=True)
        self.nonfinite_steps += 1
        self.nonfinite_in_a_row += 1
        get_root_logger().warning(f'iter {current_iter}: {reason}; step skipped ({self.nonfinite_in_a_row} in a row, '
                                  f'{self.nonfinite_steps} in total)')
        if self.nonfinite_in_a_row >= self.max_nonfinite_steps:
            raise RuntimeError(f'training stopped at iter {current_iter}: {self.nonfinite_in_a_row} non-finite steps '
                               f'in a row (train.max_nonfinite_steps = {self.max_nonfinite_steps}). The weights are '
                               'those of the last finite step; lower the learning rate, set train.grad_clip, or '
                               'check the data for NaN/Inf, then resume from the last checkpoint.')

    def optimize_parameters(self, current_iter):
        self.optimizer_g.zero_grad(set_to_none=True)
        if self.mixup is not None and current_iter >= self.mixup['from_iter']:
            self.gt, self.lq = self.mix_batch(self.gt, self.lq)
        presence = self._presence()
        # backward first, finiteness after: deciding before backward would stall the device for the forward (a host
        # sync per step); a non-finite loss gives non-finite gradients that the skipped step throws away
        loss_dict = self._forward_backward(presence)
        l_total = loss_dict['l_total']
        checked = [l_total]
        if self.grad_clip is not None:
            grad_norm = torch.nn.utils.clip_grad_norm_(self.net_g.parameters(), self.grad_clip)
            loss_dict['grad_norm'] = grad_norm.detach()
            checked.append(grad_norm)
        step_ok = self._agreed_finite(*checked)
        if not step_ok:  # rare: the extra host reads for the message cost nothing in a finite run
            own = [k for k, v in loss_dict.items() if not torch.isfinite(v).all()]
            if own == ['grad_norm']:
                reason = f'gradient norm is {loss_dict["grad_norm"].item()}'
            elif own:
                reason = 'non-finite loss (' + ', '.join(f'{k}={loss_dict[k].item()}' for k in own) + ')'
            else:
                reason = 'non-finite loss or gradient norm on another process'
            self._skip_step(current_iter, reason)
        if step_ok:
            self.optimizer_g.step()
            self.nonfinite_in_a_row = 0
            if self.ema_decay > 0:
                self.model_ema(decay=self.ema_decay)
        self.log_dict = self.reduce_loss_dict(loss_dict)
        self.log_dict['nonfinite_steps'] = self.nonfinite_steps
        self.budget_spent(current_iter)

    # ---------------------------------------------------------------------------------------------- inference
    def restore(self, lq, net=None):
        """Final-stage restoration of ``lq`` with padding, and tiling/self-ensemble as set in ``val:``.

        Args:
            lq (Tensor): ``B x C x H x W`` input on ``self.device``.
            net (nn.Module, optional): Network to run; default ``net_g_ema`` if present, else ``net_g``.

        Returns:
            Tensor: ``B x C' x H x W`` output (on the CPU, float32, when tiled).
        """
        if net is None:
            net = getattr(self, 'net_g_ema', self.net_g)

        def final(x):
            return self.run_network(net, x)[-1]

        fn = final if self.tile is None else (lambda x: tiled_apply(final, x, self.tile, self.tile_overlap))
        return self_ensemble_x8(fn, lq) if self.self_ensemble else fn(lq)

    def test(self):
        # the bare network: under DDP, BasicSR validates on rank 0 alone, and a DDP forward there would wait for
        # the other ranks (buffer broadcast) forever
        net = self.get_bare_model(getattr(self, 'net_g_ema', self.net_g))
        was_training = net.training
        net.eval()
        with torch.no_grad():
            self.output = self.restore(self.lq, net)
        net.train(was_training)

    # --------------------------------------------------------------------------------------------- validation
    def _visual_path(self, dataset_name, label, img_name, current_iter):
        if self.opt['is_train']:
            tag = current_iter
        else:
            tag = self.opt['val'].get('suffix') or self.opt['name']
        parts = [self.opt['path']['visualization'], dataset_name] + ([label] if label is not None else [])
        return osp.join(*parts, f'{img_name}_{tag}.png')

    def nondist_validation(self, dataloader, current_iter, tb_logger, save_img):
        dataset_name = dataloader.dataset.opt['name']
        metric_opts = self.opt['val'].get('metrics')
        records = []  # (label or None, {metric: value}) per image
        pbar = None
        if self.opt['val'].get('pbar', False):
            from tqdm import tqdm
            pbar = tqdm(total=len(dataloader), unit='batch')
        for val_data in dataloader:
            self.feed_data(val_data)
            self.test()
            visuals = self.get_current_visuals()
            labels = val_data.get('label_name')
            for i, lq_path in enumerate(val_data['lq_path']):
                label = None if labels is None else str(labels[i])
                img_name = osp.splitext(osp.basename(lq_path))[0]
                sr_img = tensor2img([visuals['result'][i]])
                if save_img:
                    imwrite(sr_img, self._visual_path(dataset_name, label, img_name, current_iter))
                if metric_opts is not None:
                    if 'gt' not in visuals:
                        raise ValueError(f'val.metrics needs ground truth, but dataset {dataset_name} gives no gt')
                    gt_img = tensor2img([visuals['gt'][i]])
                    values = {k: float(calculate_metric({'img': sr_img, 'img2': gt_img}, o))
                              for k, o in metric_opts.items()}
                    psnr = psnr_metric(metric_opts)
                    if psnr is not None and visuals['lq'].shape[-2:] == visuals['gt'].shape[-2:]:
                        # harm: the output more than 0.5 dB below the input (same metric, same 8-bit conversion)
                        lq_psnr = calculate_metric({'img': tensor2img([visuals['lq'][i]]), 'img2': gt_img},
                                                   metric_opts[psnr])
                        values[HARM] = harmed(values[psnr], float(lq_psnr))
                    records.append((label, values))
            del self.lq, self.output
            if hasattr(self, 'gt'):
                del self.gt
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            if pbar is not None:
                pbar.update(1)
        if pbar is not None:
            pbar.close()
        if metric_opts is not None:
            self._summarise_validation(records, dataset_name, current_iter, tb_logger)

    def _summarise_validation(self, records, dataset_name, current_iter, tb_logger):
        """Per-label, mean-over-labels and overall means (:func:`~interir_plugin.utils.metrics.label_summary`); best
        values; CSV; log."""
        metrics = list(self.opt['val']['metrics'])  # BasicSR's, tracked for best values
        extra = [HARM] if all(HARM in values for _, values in records) else []
        summary = label_summary(records, metrics + extra, f'validation dataset {dataset_name}')
        self.metric_results = {m: summary['mean'][m] for m in metrics}
        for key, values in ((dataset_name, summary['mean']),
                            *((f'{dataset_name}/{label}', summary['per_label'][label]) for label in summary['labels'])):
            self._initialize_best_metric_results(key)
            for m in metrics:
                self._update_best_metric_result(key, m, values[m], current_iter)
        self.label_metric_results = {'dataset': dataset_name, 'iter': current_iter, 'rows': summary_rows(summary)}
        self._write_metrics_csv(dataset_name, current_iter, summary)
        self._log_validation_metric_values(current_iter, dataset_name, tb_logger)

    @master_only
    def _write_metrics_csv(self, dataset_name, current_iter, summary):
        folder = self.opt['path'].get('log')
        if folder is None:
            get_root_logger().warning('path.log is not set: per-label metrics are not written to CSV')
            return
        path = osp.join(folder, 'metrics', f'{dataset_name}_{current_iter}.csv'.replace(osp.sep, '_'))
        write_label_metrics_csv(path, dataset_name, current_iter, summary)
        self.metrics_csv_path = path

    def _log_validation_metric_values(self, current_iter, dataset_name, tb_logger):
        super()._log_validation_metric_values(current_iter, dataset_name, tb_logger)  # the headline means
        rows = self.label_metric_results['rows']
        metrics = list(rows[0][2])  # val.metrics, then the harm rate where there is one
        width = max(len(str(r[0])) for r in rows)
        training = self.opt['is_train']  # best values only mean something across the validations of a run
        lines = [f'Per-label {dataset_name} (headline above = mean over labels):',
                 f'\t{"label":<{width}}  {"n":>5}  ' + '  '.join(f'{m:>10}' for m in metrics)
                 + ('  best' if training else '')]
        for label, count, values in rows:
            best = self.best_metric_results.get(f'{dataset_name}/{label}') if training else None
            best_str = ', '.join(f'{m} {best[m]["val"]:.4f} @ {best[m]["iter"]}' for m in metrics if m in best) \
                if best else ''
            lines.append(f'\t{label:<{width}}  {count:>5}  ' + '  '.join(f'{values[m]:>10.4f}' for m in metrics)
                         + f'  {best_str}')
        get_root_logger().info('\n'.join(lines))
        if tb_logger:
            for label, _, values in rows:
                for m in metrics:
                    tb_logger.add_scalar(f'metrics/{dataset_name}/{label}/{m}', values[m], current_iter)

    # -------------------------------------------------------------------------------------------- checkpoints
    @master_only
    def save_network(self, net, net_label, current_iter, param_key='params'):
        """BasicSR's ``save_network`` (same file names and layout: ``{param_key: state dict}`` without ``module.``),
        written atomically (:func:`~interir_plugin.utils.checkpoint.atomic_torch_save`)."""
        nets = net if isinstance(net, list) else [net]
        keys = param_key if isinstance(param_key, list) else [param_key]
        if len(nets) != len(keys):
            raise ValueError(f'save_network: {len(nets)} networks but {len(keys)} param keys')
        tag = 'latest' if current_iter == -1 else current_iter
        atomic_torch_save({key: bare_state_dict(n) for n, key in zip(nets, keys)},
                          osp.join(self.opt['path']['models'], f'{net_label}_{tag}.pth'))

    def save_training_state(self, epoch, current_iter):
        """BasicSR's ``save_training_state`` (``<iter>.state``: epoch, iter, optimizers, schedulers), written
        atomically by rank 0, plus ``rng``: the random generator states of every rank
        (:mod:`interir_plugin.utils.resume`). Every rank calls it (the states are gathered)."""
        if current_iter == -1:
            return
        rng = gathered_rng_states(self.opt.get('dist', False))
        if self.opt.get('rank', 0) != 0:
            return
        state = {'epoch': epoch, 'iter': current_iter,
                 'optimizers': [o.state_dict() for o in self.optimizers],
                 'schedulers': [s.state_dict() for s in self.schedulers], 'rng': rng}
        atomic_torch_save(state, osp.join(self.opt['path']['training_states'], f'{current_iter}.state'))

    def resume_training(self, resume_state):
        """BasicSR's (optimizers, schedulers), then the data position and random generators of the saved run
        (:func:`~interir_plugin.utils.resume.schedule_resume`), so the resumed run continues it exactly."""
        super().resume_training(resume_state)
        schedule_resume(self.opt, resume_state)

    def load_network(self, net, load_path, strict=True, param_key='params'):
        """Load weights with ``weights_only=True`` (:func:`~interir_plugin.utils.checkpoint.load_weights`); errors
        name the file and the offending keys.

        Args:
            net (nn.Module): Network (wrapped or bare).
            load_path (str): Checkpoint file.
            strict (bool): Require identical key sets and shapes; if False, missing/unexpected keys and keys
                whose shape differs are skipped with a warning. Default: True.
            param_key (str | None): Entry of the checkpoint holding the weights. Default: 'params'.
        """
        bare = load_weights(self.get_bare_model(net), load_path, param_key, strict,
                            hint=lambda state: 'Check network_g against the checkpoint, or set path.strict_load_g: '
                                               'false.')
        get_root_logger().info(f'Loaded {type(bare).__name__} from {load_path} (param key {param_key!r}).')
