"""Image files in: the one decoder and extension list of the data sets, ``interir prepare`` and the tools.

The rule (docs/data.md, "Image conversion rule"): bytes are decoded unchanged (OpenCV ``IMREAD_UNCHANGED``, the
format sniffed from the content, not the extension); grey (2-D or one channel) is replicated to 3 channels; RGBA
keeps the stored colour and sets the alpha channel apart (the data sets drop it, ``interir infer`` writes it back);
uint8 is divided by 255 and uint16 by 65535 exactly (65535 -> 1.0); float images are taken as they are; other
channel counts or sample types, and undecodable or truncated files, are errors naming the file.
"""
import os
from typing import NamedTuple

import cv2
import numpy as np

#: File extensions taken as images (lower case; matched case-insensitively).
IMAGE_EXTENSIONS = ('.png', '.jpg', '.jpeg', '.bmp', '.tif', '.tiff', '.webp', '.ppm', '.pgm', '.pnm')
#: Full-scale value of each integer sample type.
FULL_SCALE = {np.dtype(np.uint8): 255.0, np.dtype(np.uint16): 65535.0}
_FLOATS = (np.dtype(np.float32), np.dtype(np.float64))
#: Channels stored in the file for each :class:`DecodedImage` mode (BasicSR's meta-info lists record them).
STORED_CHANNELS = {'grey': 1, 'rgb': 3, 'rgba': 4}


def is_image_file(path):
    """Whether ``path`` has one of :data:`IMAGE_EXTENSIONS`."""
    return os.path.splitext(path)[1].lower() in IMAGE_EXTENSIONS


class DecodedImage(NamedTuple):
    """An image decoded by the rule.

    Attributes:
        bgr (ndarray): ``H x W x 3`` float32 BGR (for grey files, the grey value in every channel).
        mode (str): ``'grey'``, ``'rgb'`` or ``'rgba'``: what the file holds.
        dtype (np.dtype): The file's sample type (uint8, uint16, float32 or float64).
        alpha (ndarray | None): ``H x W`` alpha channel as stored, for ``'rgba'``.
    """
    bgr: np.ndarray
    mode: str
    dtype: np.dtype
    alpha: np.ndarray = None


def decode(content, path):
    """Decode image bytes by the rule of this module.

    Args:
        content (bytes | None): File content (None: the file or LMDB key does not exist).
        path (str): Where the bytes come from, for messages.

    Returns:
        DecodedImage: The image.
    """
    if content is None:
        raise KeyError(f'image not found: {path}')
    if content[:2] == b'\xff\xd8' and b'\xff\xd9' not in content[-64:]:
        # OpenCV decodes a truncated JPEG without error (grey bottom rows); its end-of-image marker is missing
        raise OSError(f'cannot decode image {path}: truncated JPEG (no end-of-image marker)')
    img = cv2.imdecode(np.frombuffer(content, np.uint8), cv2.IMREAD_UNCHANGED) if len(content) else None
    if img is None:
        raise OSError(f'cannot decode image {path}: the file is unreadable, truncated or not an image')
    if img.ndim == 2:
        img = img[..., None]
    channels = img.shape[2]
    if channels not in (1, 3, 4):
        raise ValueError(f'{path}: unsupported channel count {channels} (expected 1, 3 or 4)')
    if img.dtype not in FULL_SCALE and img.dtype not in _FLOATS:
        raise ValueError(f'{path}: unsupported pixel type {img.dtype} (expected uint8, uint16 or float)')
    colour = img[..., :3].astype(np.float32)
    if img.dtype in FULL_SCALE:
        colour /= np.float32(FULL_SCALE[img.dtype])
    if channels == 1:
        colour = np.repeat(colour, 3, axis=2)
    mode = {c: m for m, c in STORED_CHANNELS.items()}[channels]
    return DecodedImage(np.ascontiguousarray(colour), mode, img.dtype, img[..., 3].copy() if channels == 4 else None)


def decode_image(content, path):
    """Bytes -> float32 ``H x W x 3`` BGR image (the alpha channel dropped), by the rule of this module."""
    return decode(content, path).bgr
