"""Image files in and out for ``interir infer``: grey, RGB, RGBA, 8- and 16-bit, and the rules between them.

Rules (documented in docs/tools.md):

- Files are read with OpenCV as stored (``IMREAD_UNCHANGED``); 8-bit and 16-bit integer images are accepted,
  anything else (float TIFF/EXR, 32-bit) is refused with an error naming the file.
- The network sees an RGB float image in [0, 1] (16-bit: value / 65535). A grey image is repeated to three
  channels for a three-channel network; an RGB image is reduced to luminance (ITU-R BT.601) for a one-channel
  network.
- The output has the input's mode and bit depth: grey in -> grey out (the RGB result reduced to BT.601
  luminance), RGB -> RGB, RGBA -> RGB restored plus the input's alpha channel copied bit for bit, 8-bit ->
  8-bit, 16-bit -> 16-bit (rounded, clipped). Grey+alpha files are decoded by OpenCV as RGBA and so written as
  RGBA. The output format is the input's (its file extension).
"""
import os

import cv2
import numpy as np

#: File extensions ``interir infer`` picks up in a folder (case-insensitive).
IMAGE_EXTENSIONS = ('.png', '.jpg', '.jpeg', '.bmp', '.tif', '.tiff', '.webp', '.ppm', '.pgm', '.pnm')
_FULL_SCALE = {np.dtype(np.uint8): 255.0, np.dtype(np.uint16): 65535.0}
_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)  # BT.601 weights on R, G, B


def is_image_file(path):
    """Whether ``path`` has one of :data:`IMAGE_EXTENSIONS`."""
    return os.path.splitext(path)[1].lower() in IMAGE_EXTENSIONS


class LoadedImage:
    """An image file decoded for a network, with what is needed to write the result back alike.

    Args:
        path (str): Source file.
        rgb (ndarray): ``H x W x 3`` float32 RGB in [0, 1] (for grey files, the grey value in every channel).
        mode (str): ``'grey'``, ``'rgb'`` or ``'rgba'``.
        dtype (np.dtype): ``uint8`` or ``uint16``, the file's sample type.
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
    """Decode an image file (see the module rules).

    Args:
        path (str): Image file.

    Returns:
        LoadedImage: The decoded image.
    """
    img = cv2.imread(path, cv2.IMREAD_UNCHANGED)
    if img is None:
        raise ValueError(f'cannot read image {path} (missing, not an image, or a format OpenCV cannot decode)')
    if img.dtype not in _FULL_SCALE:
        raise ValueError(f'{path}: {img.dtype} samples are not supported; use 8-bit or 16-bit integer images')
    scale = _FULL_SCALE[img.dtype]
    if img.ndim == 3 and img.shape[2] == 1:
        img = img[:, :, 0]
    if img.ndim == 2:
        grey = img.astype(np.float32) / scale
        return LoadedImage(path, np.repeat(grey[:, :, None], 3, axis=2), 'grey', img.dtype)
    if img.ndim != 3 or img.shape[2] not in (3, 4):
        raise ValueError(f'{path}: images with shape {img.shape} are not supported (grey, RGB or RGBA)')
    rgb = np.ascontiguousarray(img[:, :, 2::-1]).astype(np.float32) / scale  # OpenCV decodes BGR(A)
    if img.shape[2] == 4:
        return LoadedImage(path, rgb, 'rgba', img.dtype, alpha=img[:, :, 3].copy())
    return LoadedImage(path, rgb, 'rgb', img.dtype)


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
    scale = _FULL_SCALE[like.dtype]
    q = np.clip(np.rint(np.clip(out, 0, 1) * scale), 0, scale).astype(like.dtype)
    if like.mode != 'grey':
        q = q[:, :, ::-1]  # RGB -> BGR for OpenCV
        if like.mode == 'rgba':
            q = np.concatenate([q, like.alpha[:, :, None]], axis=2)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    if not cv2.imwrite(path, np.ascontiguousarray(q)):
        raise OSError(f'cannot write {path} (unsupported extension for {like.mode} {like.dtype} images?)')
