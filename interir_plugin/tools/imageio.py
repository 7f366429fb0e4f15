"""Image files in and out for ``interir infer`` and ``interir explain``: the decoded image with what is needed to write
the result back in the input's mode and sample type.

Reading follows the one rule of :mod:`interir_plugin.utils.images` (docs/data.md, "Image conversion rule"). The
network sees RGB in [0, 1]; a grey image is repeated to three channels for a three-channel network and an RGB image
is reduced to luminance (ITU-R BT.601) for a one-channel network. Writing (docs/tools.md, ``interir infer``): the
output has the input's mode and sample type: grey in -> grey out (the RGB result reduced to BT.601 luminance),
RGB -> RGB, RGBA -> RGB restored plus the input's alpha channel copied bit for bit, 8-bit -> 8-bit, 16-bit -> 16-bit
(rounded, clipped), float -> float32 (clipped to [0, 1]). Grey+alpha files are decoded by OpenCV as RGBA and so
written as RGBA. The output format is the input's (its file extension).
"""
import os

import cv2
import numpy as np

from interir_plugin.utils.images import FULL_SCALE, IMAGE_EXTENSIONS, decode, is_image_file

__all__ = ['IMAGE_EXTENSIONS', 'LoadedImage', 'is_image_file', 'read_image', 'write_image']
_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)  # BT.601 weights on R, G, B


class LoadedImage:
    """An image file decoded for a network, with what is needed to write the result back alike.

    Args:
        path (str): Source file.
        rgb (ndarray): ``H x W x 3`` float32 RGB in [0, 1] (for grey files, the grey value in every channel).
        mode (str): ``'grey'``, ``'rgb'`` or ``'rgba'``.
        dtype (np.dtype): The file's sample type (``uint8``, ``uint16``, ``float32`` or ``float64``).
        alpha (ndarray | None): ``H x W`` alpha channel in the file's dtype, for ``'rgba'``. Default: None.
    """

    def __init__(self, path, rgb, mode, dtype, alpha=None):
        self.path, self.rgb, self.mode, self.dtype, self.alpha = path, rgb, mode, np.dtype(dtype), alpha

    @property
    def size(self):
        """``(H, W)``."""
        return self.rgb.shape[:2]

    def network_input(self, channels):
        """The image as a float32 ``channels x H x W`` array for a network with ``channels`` (1 or 3) inputs."""
        if channels == 3:
            return np.ascontiguousarray(self.rgb.transpose(2, 0, 1))
        if channels == 1:
            return (self.rgb @ _LUMA)[None] if self.mode != 'grey' else self.rgb[None, :, :, 0].copy()
        raise ValueError(f'{self.path}: networks with {channels} input channels are not supported (1 or 3)')


def read_image(path):
    """Decode an image file (see :mod:`interir_plugin.utils.images`); bad files raise ``ValueError`` naming them.

    Args:
        path (str): Image file.

    Returns:
        LoadedImage: The decoded image.
    """
    try:
        with open(path, 'rb') as f:
            content = f.read()
    except OSError as err:
        raise ValueError(f'cannot read image {path}: {err.strerror or err}') from err
    try:
        img = decode(content, path)
    except OSError as err:  # undecodable: bad input, reported like the other bad inputs of the tools
        raise ValueError(str(err)) from err
    return LoadedImage(path, np.ascontiguousarray(img.bgr[:, :, ::-1]), img.mode, img.dtype, img.alpha)


def write_image(path, output, like):
    """Write a network output in the mode and bit depth of the image it came from.

    Args:
        path (str): Destination file; its extension picks the format. Parent folders are created.
        output (ndarray): ``C x H x W`` float array (C = 1 or 3), nominally in [0, 1]; clipped.
        like (LoadedImage): The source image (mode, dtype, alpha).
    """
    if output.ndim != 3 or output.shape[0] not in (1, 3) or tuple(output.shape[1:]) != tuple(like.size):
        raise ValueError(f'output for {like.path} has shape {output.shape}; expected 1 or 3 x {like.size}')
    out = output.astype(np.float32).transpose(1, 2, 0)
    if like.mode == 'grey':
        out = out[:, :, 0] if out.shape[2] == 1 else out @ _LUMA
    elif out.shape[2] == 1:
        out = np.repeat(out, 3, axis=2)
    if like.dtype in FULL_SCALE:
        scale = FULL_SCALE[like.dtype]
        q = np.clip(np.rint(np.clip(out, 0, 1) * scale), 0, scale).astype(like.dtype)
    else:  # float files get float32 back (no quantisation)
        q = np.clip(out, 0, 1).astype(np.float32)
    if like.mode != 'grey':
        q = q[:, :, ::-1]  # RGB -> BGR for OpenCV
        if like.mode == 'rgba':
            q = np.concatenate([q, like.alpha[:, :, None]], axis=2)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    if not cv2.imwrite(path, np.ascontiguousarray(q)):
        raise OSError(f'cannot write {path} (unsupported extension for {like.mode} {like.dtype} images?)')
