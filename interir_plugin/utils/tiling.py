"""Test-time helpers for image-to-image networks: tiled inference with smooth blending, and x8 self-ensemble.

Tiled inference runs the network on overlapping tiles one at a time and accumulates the weighted outputs in
float32 buffers on the CPU, so peak memory is the image-size buffers plus one tile's activations. Each tile's
weight is a separable window: 1 in its interior, 0 in the outer quarter of the overlap at every edge that
borders another tile (where the tile lacks context), and a raised-cosine ramp over the middle half of the
overlap. Opposite ramps of two neighbours sum to 1, and the division by the summed weights makes the result
a convex blend everywhere. For a network whose receptive-field radius is at most ``overlap // 4`` (and no
global operation such as pooling or normalisation over the whole image), the result equals whole-image
inference up to float rounding; for larger receptive fields the difference shrinks with the overlap. Networks with
image-wide operators (InterIR: the h x h / w x w factors P and Q, FFT frequency branches, pooled routing and
attention; DGUNet: pooled attention, instance norm, subspace projection) compute something else on a tile than
on the whole image: one tile covering the image gives the whole-image output exactly, smaller tiles differ by
design, less with more overlap and larger tiles (tests/test_tiling.py, docs/training.md).
"""
import math

import torch


def tile_starts(size, tile, overlap):
    """Start offsets of tiles of length ``tile`` covering ``0..size-1`` with at least ``overlap`` shared pixels.

    Args:
        size (int): Image length along one axis.
        tile (int): Tile length (clipped to ``size``).
        overlap (int): Minimum overlap of neighbouring tiles; ``0 <= overlap < tile``.

    Returns:
        list[int]: Increasing starts; the last tile ends exactly at ``size``.
    """
    tile = min(tile, size)
    if tile == size:
        return [0]
    stride = tile - overlap
    starts = list(range(0, size - tile, stride))
    return starts + [size - tile]


def blend_window(length, overlap, interior_start, interior_end):
    """1-D blending weight of one tile.

    Args:
        length (int): Tile length.
        overlap (int): Overlap between neighbouring tiles (``length >= 2 * overlap``).
        interior_start (bool): The tile's first pixel borders another tile (not the image edge).
        interior_end (bool): The tile's last pixel borders another tile.

    Returns:
        Tensor: float32 ``(length,)`` weights in ``[0, 1]``.
    """
    w = torch.ones(length)
    dead = overlap // 4  # pixels next to a tile edge whose output lacks context: weight 0
    ramp_len = overlap - 2 * dead
    ramp = 0.5 - 0.5 * torch.cos(math.pi * (torch.arange(ramp_len) + 0.5) / max(ramp_len, 1))
    if interior_start:
        w[:dead] = 0
        w[dead:dead + ramp_len] = ramp
    if interior_end:
        w[length - dead:] = 0
        w[length - dead - ramp_len:length - dead] = ramp.flip(0)
    return w


def check_tile_options(tile, overlap, multiple=1):
    """Raise ``ValueError`` naming the option unless ``tile``/``overlap`` form a valid tiling.

    Args:
        tile (int | None): ``val.tile``; None disables tiling.
        overlap (int): ``val.tile_overlap``.
        multiple (int): The network's ``size_multiple``; tiles must be multiples of it. Default: 1.
    """
    if tile is None:
        return
    if not isinstance(tile, int) or isinstance(tile, bool) or tile < 1:
        raise ValueError(f'val.tile must be a positive int or null, got {tile!r}')
    if not isinstance(overlap, int) or isinstance(overlap, bool) or overlap < 0:
        raise ValueError(f'val.tile_overlap must be a non-negative int, got {overlap!r}')
    if tile < 2 * overlap:
        raise ValueError(f'val.tile ({tile}) must be at least twice val.tile_overlap ({overlap})')
    if tile % multiple:
        raise ValueError(f'val.tile ({tile}) must be a multiple of the network size_multiple ({multiple})')


def tiled_apply(fn, x, tile, overlap):
    """Apply an image-to-image function on overlapping tiles and blend the results.

    Args:
        fn (callable): Maps a ``B x C x h x w`` tile to a ``B x C' x h x w`` tensor (same spatial size).
        x (Tensor): ``B x C x H x W`` input on any device; tiles are cut from it in place (no copy of ``x``).
        tile (int): Tile side; tiles are ``min(tile, H) x min(tile, W)``.
        overlap (int): Overlap of neighbouring tiles (see :func:`check_tile_options`).

    Returns:
        Tensor: ``B x C' x H x W`` float32 tensor on the CPU.
    """
    check_tile_options(tile, overlap)
    b, _, h, w = x.shape
    th, tw = min(tile, h), min(tile, w)
    ys, xs = tile_starts(h, th, overlap), tile_starts(w, tw, overlap)
    sum_y, sum_x = torch.zeros(h), torch.zeros(w)
    wins_y = [blend_window(th, overlap, y0 > 0, y0 + th < h) for y0 in ys]
    wins_x = [blend_window(tw, overlap, x0 > 0, x0 + tw < w) for x0 in xs]
    for y0, win in zip(ys, wins_y):
        sum_y[y0:y0 + th] += win
    for x0, win in zip(xs, wins_x):
        sum_x[x0:x0 + tw] += win
    out = None
    for y0, wy in zip(ys, wins_y):
        for x0, wx in zip(xs, wins_x):
            y = fn(x[..., y0:y0 + th, x0:x0 + tw])
            if y.shape[0] != b or y.shape[-2:] != (th, tw):
                raise ValueError(f'tiled inference: a {th}x{tw} tile gave an output of shape {tuple(y.shape)}; '
                                 'only same-size image-to-image networks can be tiled')
            if out is None:
                out = torch.zeros(b, y.shape[1], h, w)
            out[..., y0:y0 + th, x0:x0 + tw] += y.detach().float().cpu() * (wy[:, None] * wx[None, :])
    # the windows are separable and laid on a grid, so their sum is the outer product of the 1-D sums
    return out.div_(sum_y[:, None]).div_(sum_x[None, :])


def self_ensemble_x8(fn, x):
    """x8 geometric self-ensemble: average ``fn`` over the 4 rotations x 2 flips, each mapped back.

    Args:
        fn (callable): Image-to-image function on ``B x C x H x W`` tensors (gets ``W x H`` ones too).
        x (Tensor): Input.

    Returns:
        Tensor: float32 mean of the 8 back-transformed outputs, on the device ``fn`` returns.
    """
    total = None
    for k in range(4):
        for flip in (False, True):
            t = torch.rot90(x, k, dims=(-2, -1))
            t = t.flip(-1) if flip else t
            y = fn(t).float()
            y = y.flip(-1) if flip else y
            y = torch.rot90(y, -k, dims=(-2, -1))
            total = y.clone() if total is None else total.add_(y)
    return total.div_(8)
