"""Training memory per GPU of every GPU option file, measured on the CPU without running the network's arithmetic.

    .venv/bin/python benchmarks/bench_gpu_memory.py [--files A.yml B.yml ...] [--quick]

For each training option file meant for GPUs (``num_gpu`` not 0, no ``train.time_budget``: not the CPU recipes), one
training forward of its ``network_g`` on one process's batch (``batch_size_per_gpu`` images of ``gt_size`` x
``gt_size``, padded as the model class pads; ``train.micro_batches`` splits it), with the file's stage losses
(:meth:`UnfoldingRestorationModel.compute_losses`) and, for networks with presence gates, teacher-forced gates, runs
under torch's ``FakeTensorMode``: every tensor has its shape, dtype and storage but no data, so InterIR-L at batch 32
costs seconds. ``torch.autograd.graph.saved_tensors_hooks`` collects every tensor autograd saves for the backward
pass; their storages (each counted once, the parameters' excepted) are the activation memory of the step, the
memory a GPU holds between forward and backward. The same count on real CPU tensors gives the same bytes (checked
in tests/test_gpu_path.py).

Per GPU: ``activations`` (the saved tensors of one chunk) + ``static``: the float32 weights, their gradients, the
optimizer's state (Adam/AdamW: two moments per weight) and, with ``ema_decay`` > 0, the EMA copy (weights and
buffers). Not counted: the CUDA context and cuDNN workspaces (about 0.5-1 GiB), the backward pass's transient
gradient buffers and the caching allocator's fragmentation; hence the GPU classes below leave 15 % and 1 GiB:
a file fits a 24 GB card when its estimate is at most 24 GB / 1.15 - 1 GiB (18.4 GiB), a 40 GB card at 31.4 GiB,
an 80 GB card at 63.8 GiB. Under DataParallel (``num_gpu`` > 1 without a launcher) GPU 0 also gathers the outputs;
the estimate is GPU 0's without them (a few MiB here).
"""
import argparse
import glob
import math
import os
import sys
import types

import torch
import yaml

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import add_quick_flag, emit  # noqa: E402

import interir_plugin  # noqa: E402,F401  (shims and registration)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GIB = 2 ** 30
#: GPU memory classes (GB as sold, 1e9 bytes) and the largest estimate (GiB) each takes: 15 % and 1 GiB left.
GPU_CLASSES = tuple((gb, (gb * 1e9 / 1.15 - GIB) / GIB) for gb in (24, 40, 80))


def gpu_option_files(root=REPO):
    """Training option files meant for GPUs: ``num_gpu`` other than 0 and no ``train.time_budget``."""
    files = []
    for path in sorted(glob.glob(os.path.join(root, 'options', 'train', '*', 'train_*.yml'))):
        with open(path, encoding='utf-8') as f:
            opt = yaml.safe_load(f)
        if opt.get('num_gpu', 'auto') != 0 and not (opt.get('train') or {}).get('time_budget'):
            files.append(path)
    return files


def _stage_losses(train_opt):
    """An object with what :meth:`UnfoldingRestorationModel.compute_losses` reads, built from ``train:``."""
    from basicsr.losses import build_loss

    def loss(key):
        return build_loss(dict(train_opt[key])) if train_opt.get(key) else None

    return types.SimpleNamespace(cri_pix=loss('pixel_opt'), cri_edge=loss('edge_opt'), cri_freq=loss('frequency_opt'),
                                 stage_weights=train_opt.get('stage_weights'),
                                 clamp_outputs=train_opt.get('clamp_outputs', False), opt={'network_g': {'type': ''}})


def activation_bytes(network_opt, train_opt, batch, patch, fake=True):
    """Bytes of the tensors autograd saves for the backward pass of one training forward and its stage losses.

    Args:
        network_opt (dict): ``network_g``.
        train_opt (dict): ``train:`` (losses, ``stage_weights``, ``clamp_outputs``).
        batch (int): Images in the forward.
        patch (int): Training patch side.
        fake (bool): Run under ``FakeTensorMode`` (no arithmetic); False runs it for real on the CPU. Default: True.

    Returns:
        dict: ``activations`` (bytes, each storage once, parameters and buffers excluded), ``params`` (trainable
        weights), ``buffers`` (elements of the buffers).
    """
    import contextlib

    from basicsr.archs import build_network
    from torch._subclasses.fake_tensor import FakeTensorMode

    from interir_plugin.data.degradations import CDD11_CATEGORIES
    from interir_plugin.models.unfolding_model import UnfoldingRestorationModel
    from interir_plugin.utils.padding import crop_to, pad_for_network
    from interir_plugin.utils.presence import presence_targets

    with FakeTensorMode() if fake else contextlib.nullcontext():
        torch.manual_seed(0)
        net = build_network(dict(network_opt)).train()
        losses = _stage_losses(train_opt)
        own = {t.untyped_storage()._cdata for t in (*net.parameters(), *net.buffers())}
        saved = {}

        def pack(t):
            key = t.untyped_storage()._cdata
            if key not in own:
                saved[key] = t.untyped_storage().nbytes()
            return t

        channels = int(network_opt.get('num_in_ch', network_opt.get('in_c', 3)))
        lq, gt = torch.rand(batch, channels, patch, patch), torch.rand(batch, channels, patch, patch)
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            padded, size = pad_for_network(lq, net)
            if getattr(net, 'recognises', False):
                labels = [CDD11_CATEGORIES[i % len(CDD11_CATEGORIES)] for i in range(batch)]
                targets = presence_targets(labels)
                out, logits = net(padded, presence=targets[0])
                total = torch.nn.functional.binary_cross_entropy_with_logits(logits, targets[0])
            else:
                out, total = net(padded), 0
            outputs = crop_to(list(out) if isinstance(out, (list, tuple)) else [out], size)
            total = total + UnfoldingRestorationModel.compute_losses(losses, outputs, gt)[0]
        params = sum(p.numel() for p in net.parameters() if p.requires_grad)
        buffers = sum(b.numel() for b in net.buffers())
    return {'activations': sum(saved.values()), 'params': params, 'buffers': buffers}


def file_memory(path, batch=None, patch=None, micro_batches=None):
    """The estimate of one option file (see the module docstring); ``batch``, ``patch`` and ``micro_batches``
    override the file's ``batch_size_per_gpu``, ``gt_size`` and ``train.micro_batches``."""
    with open(path, encoding='utf-8') as f:
        opt = yaml.safe_load(f)
    train, data = opt['train'], opt['datasets']['train']
    per_gpu = batch or data['batch_size_per_gpu']
    micro = micro_batches or train.get('micro_batches', 1)
    chunk = math.ceil(per_gpu / micro)
    patch = patch or data['gt_size']
    measured = activation_bytes(opt['network_g'], train, chunk, patch)
    optim = train['optim_g']['type']
    moments = 2 if optim in ('Adam', 'AdamW') else 0
    ema = train.get('ema_decay', 0) > 0
    static = 4 * (measured['params'] * (2 + moments + ema) + measured['buffers'] * (1 + ema))
    total = measured['activations'] + static
    fits = next((f'{gb} GB' for gb, limit in GPU_CLASSES if total / GIB <= limit), '> 80 GB')
    gpus = opt['num_gpu'] if not isinstance(opt['num_gpu'], str) else 1
    return {'file': os.path.relpath(path, REPO), 'network': opt['network_g']['type'],
            'total_batch': data.get('total_batch_size'), 'gpus': gpus, 'batch_per_gpu': per_gpu,
            'micro_batches': micro, 'patch': patch, 'params_m': measured['params'] / 1e6,
            'activations_gib': measured['activations'] / GIB, 'static_gib': static / GIB, 'total_gib': total / GIB,
            'gpu': fits}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--files', nargs='+', help='option files (default: every GPU training option file)')
    parser.add_argument('--micro-batches', type=int, default=None,
                        help="override every file's train.micro_batches (what a smaller GPU would run)")
    add_quick_flag(parser)
    args = parser.parse_args()
    if args.quick:  # one small file at batch 2 of 32 x 32
        rows = [file_memory(os.path.join(REPO, 'options', 'train', 'InterIR', 'train_InterIR_MiniCDD.yml'), 2, 32)]
    else:
        rows = [file_memory(path, micro_batches=args.micro_batches) for path in (args.files or gpu_option_files())]
    columns = ['file', 'network', 'total_batch', 'gpus', 'batch_per_gpu', 'micro_batches', 'patch', 'params_m',
               'activations_gib', 'static_gib', 'total_gib', 'gpu']
    emit('gpu_memory', {'rows': rows, 'gpu_classes_gib': dict(GPU_CLASSES)}, rows, columns)


if __name__ == '__main__':
    main()
