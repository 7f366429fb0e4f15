"""Cost of one forward pass: parameters and multiply-adds (mmengine), latency and peak memory.

Latency is the median (with min and max) over ``repeats`` timed forward passes after ``warmup`` untimed ones,
without gradients, the device synchronised around each pass. Peak memory is the largest amount of memory the
forward pass itself holds at once, above what was allocated before it: on CUDA from
``torch.cuda.max_memory_allocated`` (the caching allocator's own count), on the CPU from the allocation and
free events that the PyTorch profiler records with ``profile_memory=True`` (tensors only, not the Python
interpreter or library code).
"""
import copy
import os
import statistics
import time

import torch
from basicsr.archs import build_network

from interir_plugin.tools.loading import input_channels, resolve_device
from interir_plugin.tools.options import load_option_file
from interir_plugin.utils.complexity import model_complexity
from interir_plugin.utils.padding import pad_for_network


def _sync(device):
    if device.type == 'cuda':
        torch.cuda.synchronize(device)


def _final(out):
    """The final image of a network output (a tensor, or a list of stage outputs)."""
    return out[-1] if isinstance(out, (list, tuple)) else out


def example_input(net, input_shape, device):
    """A ``1 x C x H x W`` uniform random input, reflect-padded to what ``net`` accepts (:func:`pad_for_network`)."""
    x = torch.rand(1, *input_shape, generator=torch.Generator().manual_seed(0))
    return pad_for_network(x, net)[0].to(device)


def measure_latency(net, x, repeats=10, warmup=2):
    """Forward latency of ``net`` on ``x`` in milliseconds.

    Args:
        net (nn.Module): Network, in eval mode, on ``x``'s device.
        x (Tensor): Input.
        repeats (int): Timed passes (at least 1). Default: 10.
        warmup (int): Untimed passes first. Default: 2.

    Returns:
        dict: ``latency_ms`` (median), ``latency_min_ms``, ``latency_max_ms``, ``repeats``.
    """
    if repeats < 1:
        raise ValueError(f'repeats must be >= 1, got {repeats}')
    times = []
    with torch.no_grad():
        for i in range(warmup + repeats):
            _sync(x.device)
            t0 = time.perf_counter()
            _final(net(x))
            _sync(x.device)
            if i >= warmup:
                times.append((time.perf_counter() - t0) * 1e3)
    return {'latency_ms': statistics.median(times), 'latency_min_ms': min(times), 'latency_max_ms': max(times),
            'repeats': repeats}


def measure_peak_memory(net, x):
    """Peak memory (MiB) held during one forward pass of ``net`` on ``x``, above what was held before it.

    Args:
        net (nn.Module): Network, in eval mode, on ``x``'s device.
        x (Tensor): Input.

    Returns:
        dict: ``peak_memory_mb`` (float, or None if the device offers no way to measure it) and
        ``peak_memory_method`` (how it was measured).
    """
    if x.device.type == 'cuda':
        torch.cuda.synchronize(x.device)
        torch.cuda.reset_peak_memory_stats(x.device)
        before = torch.cuda.memory_allocated(x.device)
        with torch.no_grad():
            _final(net(x))
        torch.cuda.synchronize(x.device)
        peak = torch.cuda.max_memory_allocated(x.device) - before
        return {'peak_memory_mb': peak / 2**20, 'peak_memory_method': 'torch.cuda.max_memory_allocated'}
    if x.device.type != 'cpu':
        return {'peak_memory_mb': None, 'peak_memory_method': f'not measured on {x.device.type}'}
    os.environ.setdefault('KINETO_LOG_LEVEL', '5')  # before the profiler's first start: no C++ log lines
    from torch.profiler import ProfilerActivity, profile

    with torch.no_grad(), profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        _final(net(x))
    # kineto's raw events include every allocation (+bytes) and free (-bytes); replay them in time order
    events = sorted((e for e in prof.profiler.kineto_results.events() if e.name() == '[memory]'),
                    key=lambda e: e.start_ns())
    current = peak = 0
    for e in events:
        current += e.nbytes()
        peak = max(peak, current)
    return {'peak_memory_mb': peak / 2**20, 'peak_memory_method': 'torch.profiler CPU allocation events'}


def profile_network(net, input_shape=(3, 256, 256), device=None, repeats=10, warmup=2, memory=True):
    """Parameters, multiply-adds, latency and peak memory of one forward pass.

    Args:
        net (nn.Module): Network (moved to ``device`` and put in eval mode).
        input_shape (tuple[int]): ``(C, H, W)`` of the input; padded to ``net.size_multiple``. Default: (3, 256, 256).
        device (torch.device, optional): Device; default the network's. Default: None.
        repeats (int): Timed forward passes. Default: 10.
        warmup (int): Untimed passes first. Default: 2.
        memory (bool): Also measure peak memory. Default: True.

    Returns:
        dict: ``params``, ``macs``, ``mparams``, ``gmacs``, ``input_shape``, ``device``, latency keys
        (:func:`measure_latency`) and, if ``memory``, peak-memory keys (:func:`measure_peak_memory`).
    """
    if device is None:
        device = next(net.parameters()).device
    net = net.to(device).eval()
    x = example_input(net, input_shape, device)
    result = dict(model_complexity(net, tuple(x.shape[1:])))
    result['input_shape'] = list(x.shape[1:])
    result['device'] = str(device) if device.type == 'cpu' else torch.cuda.get_device_name(device)
    result['threads'] = torch.get_num_threads()
    result.update(measure_latency(net, x, repeats=repeats, warmup=warmup))
    if memory:
        result.update(measure_peak_memory(net, x))
    return result


def profile_option_file(option_path, input_size=(256, 256), device='auto', repeats=10, warmup=2, memory=True):
    """:func:`profile_network` for the ``network_g`` of an option file (plugin or BasicSR arch, random weights).

    Args:
        option_path (str): Option YAML file.
        input_size (tuple[int]): ``(H, W)`` of the input; its channels come from ``network_g``. Default: (256, 256).
        device (str): ``'auto'``, ``'cpu'`` or ``'cuda[:i]'``. Default: 'auto'.
        repeats (int): Timed forward passes. Default: 10.
        warmup (int): Untimed passes first. Default: 2.
        memory (bool): Also measure peak memory. Default: True.

    Returns:
        dict: ``option_file``, ``network`` (the ``network_g`` type) and the keys of :func:`profile_network`.
    """
    opt = load_option_file(option_path)
    net_opt = opt['network_g']
    try:
        net = build_network(copy.deepcopy(net_opt))
    except Exception as err:
        raise ValueError(f'{option_path}: cannot build network_g {net_opt}: {type(err).__name__}: {err}') from err
    shape = (input_channels(net_opt), *input_size)
    result = profile_network(net, shape, resolve_device(device), repeats=repeats, warmup=warmup, memory=memory)
    return {'option_file': option_path, 'network': net_opt['type'], **result}
