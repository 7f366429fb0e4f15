"""Running a restorer to look inside it, shared by ``interir explain`` and ``interir audit``: the padded forward
pass with InterIR's auxiliary outputs, image tensors, 8-bit PSNR and compact JSON numbers."""
import inspect
import math

import numpy as np
import torch
from basicsr.metrics import calculate_psnr
from basicsr.utils import tensor2img

from interir_plugin.utils.padding import crop_to, pad_for_network


def image_tensor(rgb):
    """``H x W x C`` float array -> ``C x H x W`` tensor (a contiguous copy when ``rgb`` is a view)."""
    return torch.from_numpy(np.ascontiguousarray(rgb.transpose(2, 0, 1)))


def psnr(a, b):
    """PSNR (dB) of two ``C x H x W`` tensors in [0, 1] after 8-bit rounding (as BasicSR's validation)."""
    return float(calculate_psnr(tensor2img([a]), tensor2img([b]), crop_border=0))


def round_floats(x, digits=5):
    """Nested dicts and lists of floats rounded to ``digits`` significant digits (compact JSON)."""
    if isinstance(x, dict):
        return {k: round_floats(v, digits) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [round_floats(v, digits) for v in x]
    if not isinstance(x, float):
        return x
    return x if x == 0 or not math.isfinite(x) else float(f'{x:.{digits}g}')


def run_network(net, x):
    """Forward ``x`` (padded to what ``net`` accepts) with the auxiliary outputs when the net offers them.

    Returns:
        tuple: ``(stage outputs cropped back (list), aux dict or None)``.
    """
    padded, size = pad_for_network(x, net)
    with torch.no_grad():
        if 'return_aux' in inspect.signature(net.forward).parameters:
            out, aux = net(padded, return_aux=True)
        else:
            out, aux = net(padded), None
    outputs = list(out) if isinstance(out, (list, tuple)) else [out]
    return crop_to(outputs, size), aux
