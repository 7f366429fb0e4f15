"""Reflect padding of images to a size multiple, and cropping back (for nets that need ``H, W % m == 0``)."""
import torch


def _reflect_index(n, total, device):
    """Indices ``0..total-1`` folded into ``0..n-1`` by mirror reflection without repeating the edge.

    Equals ``F.pad(..., mode='reflect')`` for pads shorter than ``n`` and keeps reflecting (periodically) for
    longer ones, which ``F.pad`` refuses; a size-1 axis is replicated.
    """
    idx = torch.arange(total, device=device)
    if n == 1:
        return torch.zeros_like(idx)
    period = 2 * (n - 1)
    idx = idx % period
    return torch.where(idx >= n, period - idx, idx)


def pad_to_multiple(x, multiple, min_size=1):
    """Reflect-pad the bottom and right of ``x`` so that its height and width are multiples of ``multiple`` and at
    least ``min_size``.

    Args:
        x (Tensor): ``(..., H, W)`` tensor (usually ``B x C x H x W``).
        multiple (int): Required multiple (``net.size_multiple``); 1 leaves ``x`` untouched.
        min_size (int): Smallest side the network accepts (``net.min_size``, e.g. DGUNet's 16). Default: 1.

    Returns:
        tuple: ``(padded, (H, W))``: the padded tensor (``x`` itself if no padding is needed) and the original
        size, for :func:`crop_to`.
    """
    if not isinstance(multiple, int) or isinstance(multiple, bool) or multiple < 1:
        raise ValueError(f'pad_to_multiple: multiple must be a positive int, got {multiple!r}')
    h, w = x.shape[-2:]
    if h == 0 or w == 0:
        raise ValueError(f'pad_to_multiple: cannot pad an empty image of size {h}x{w}')
    least = min_size + -min_size % multiple
    ph, pw = max(-h % multiple, least - h), max(-w % multiple, least - w)
    if ph:
        x = x.index_select(-2, _reflect_index(h, h + ph, x.device))
    if pw:
        x = x.index_select(-1, _reflect_index(w, w + pw, x.device))
    return x, (h, w)


def pad_for_network(x, net):
    """:func:`pad_to_multiple` with the sizes ``net`` declares: ``net.size_multiple`` and ``net.min_size`` (1 where
    absent). ``net`` is the bare network (not a DDP / DataParallel wrapper)."""
    return pad_to_multiple(x, getattr(net, 'size_multiple', 1), getattr(net, 'min_size', 1))


def crop_to(x, size):
    """Crop a tensor or each tensor of a list/tuple to its top-left ``size = (H, W)``.

    Args:
        x (Tensor | list[Tensor] | tuple[Tensor]): ``(..., H', W')`` with ``H' >= H`` and ``W' >= W``.
        size (tuple[int]): ``(H, W)`` as returned by :func:`pad_to_multiple`.

    Returns:
        Tensor | list[Tensor]: Cropped tensor, or a list of cropped tensors for list/tuple input.
    """
    h, w = size
    if isinstance(x, (list, tuple)):
        return [crop_to(t, size) for t in x]
    if x.shape[-2] < h or x.shape[-1] < w:
        raise ValueError(f'crop_to: tensor of size {tuple(x.shape[-2:])} is smaller than the crop {h}x{w}')
    return x[..., :h, :w]
