"""Parameter and multiply-add counts: mmengine's analysis is the one way the project counts them."""
import logging

import torch


def model_complexity(net, input_shape=(3, 256, 256)):
    """Count parameters and multiply-adds of one forward pass with mmengine's ``get_model_complexity_info``.

    mmengine (like fvcore) counts one fused multiply-add as one "flop", so its ``flops`` are multiply-adds.

    Args:
        net (nn.Module): Network; run once in eval mode without gradients on a zero input.
        input_shape (tuple[int]): ``(C, H, W)`` of the input, without the batch dimension. Default: (3, 256, 256).

    Returns:
        dict: ``params`` (int), ``macs`` (int) and ``gmacs``/``mparams`` (float) for tables.
    """
    from mmengine.analysis import get_model_complexity_info
    from mmengine.logging import MMLogger

    was_training = net.training
    logger = MMLogger.get_current_instance()
    level = logger.level
    net.eval()
    # mmengine warns once per call about every operator it does not count (FFTs, pixel shuffle, ...); what it
    # counts and what not is documented (docs/interir.md), so the repeated warnings are noise in our tables
    logger.setLevel(logging.ERROR)
    try:
        with torch.no_grad():
            info = get_model_complexity_info(net, input_shape=tuple(input_shape), show_table=False, show_arch=False)
    finally:
        logger.setLevel(level)
        net.train(was_training)
    params = int(sum(p.numel() for p in net.parameters()))
    macs = int(info['flops'])
    return {'params': params, 'macs': macs, 'mparams': params / 1e6, 'gmacs': macs / 1e9}
