"""What every renderer shares: the registry, parameter domains and draws, the generator, image checks, and the
random fields (Gaussian, spatially correlated, fractal, streaks) the formation models are made of.

A renderer is registered with :func:`register`, which records the *domain* of each drawn parameter (the values
the physics allows: a negative density, a gamma below 1, an opacity above 1 are refused). The same domains serve
:func:`draw_params` (a direct call) and :func:`check_param` (a spec, checked before anything is rendered), so a
bad value fails with the parameter's name wherever it is given.
"""
import numbers
from collections import namedtuple

import cv2
import numpy as np

#: the components that have several formation models, in the synthesiser's physical order.
COMPONENTS = ('low_light', 'rain', 'snow', 'haze')
#: component -> {renderer name: function}; filled by :func:`register` when the component modules are imported.
RENDERERS = {component: {} for component in COMPONENTS}
#: component -> the renderer a spec without ``renderer`` uses (the synthesiser's original model).
DEFAULT_RENDERERS = {'low_light': 'retinex', 'rain': 'streaks', 'snow': 'flakes', 'haze': 'scatter'}

#: The values a drawn parameter may take: ``[low, high]`` (None: unbounded), integers only when ``integer``.
Domain = namedtuple('Domain', 'low high integer')


def real(low=None, high=None):
    """The domain of a real parameter in ``[low, high]`` (None: no bound on that side)."""
    return Domain(low, high, False)


def integer(low=None, high=None):
    """The domain of an integer parameter in ``[low, high]`` (None: no bound on that side)."""
    return Domain(low, high, True)


def register(component, name, where=None, **domains):
    """Register a renderer of ``component`` under ``name``, with the domains of its drawn parameters.

    Args:
        component (str): One of :data:`COMPONENTS`.
        name (str): The renderer's name in specs (``renderer: name``).
        where (str | None): Prefix of its error messages and of parameter names in them. Default: None
            (``'<component>.<name>'``).
        **domains (Domain): Parameter -> domain (:func:`real`, :func:`integer`), in the order the function
            draws them.

    Returns:
        callable: The decorator; it sets ``fn.component``, ``fn.renderer``, ``fn.where`` and ``fn.domains``.
    """
    if component not in RENDERERS:
        raise ValueError(f'unknown component {component!r}; expected one of {", ".join(COMPONENTS)}')

    def wrap(fn):
        if name in RENDERERS[component]:
            raise ValueError(f'renderer {name!r} of {component!r} is registered twice')
        fn.component, fn.renderer, fn.where, fn.domains = component, name, where or f'{component}.{name}', domains
        RENDERERS[component][name] = fn
        return fn

    return wrap


def make_rng(seed, index=0, draw=None):
    """A generator that depends on ``(seed, index)`` only, or on ``(seed, index, draw)`` (Philox counter-based bit
    generator).

    Args:
        seed (int): Experiment seed (non-negative).
        index (int): Sample index (non-negative). Default: 0.
        draw (int | None): A further non-negative key, e.g. a fresh random number per access in training. Default:
            None (the generator of ``(seed, index)``, unchanged).

    Returns:
        numpy.random.Generator
    """
    entropy = [int(seed), int(index)] + ([] if draw is None else [int(draw)])
    return np.random.Generator(np.random.Philox(np.random.SeedSequence(entropy)))


def as_rng(rng):
    """``rng`` itself (a numpy Generator) or :func:`make_rng` of an int seed."""
    if isinstance(rng, np.random.Generator):
        return rng
    if isinstance(rng, numbers.Integral):
        return make_rng(rng)
    raise TypeError(f'rng must be a numpy Generator or an int seed, got {type(rng).__name__}')


def _is_real(value):
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def check_param(value, name, domain=None):
    """Check a parameter value (a number or a ``[low, high]`` pair) against its domain; raise naming ``name``.

    Args:
        value: The value given.
        name (str): Its name in messages (``haze.fog.thickness``).
        domain (Domain | None): Allowed values. Default: None (any real number).

    Returns:
        tuple: ``(low, high)`` (equal for a fixed number).
    """
    if _is_real(value):
        low = high = value
    elif isinstance(value, (list, tuple)) and len(value) == 2 and all(_is_real(v) for v in value):
        low, high = value
        if low > high:
            raise ValueError(f'{name}: range {list(value)} has low > high')
    else:
        raise ValueError(f'{name} must be a number or a [low, high] pair, got {value!r}')
    if domain is not None:
        if domain.low is not None and low < domain.low:
            raise ValueError(f'{name} must be >= {domain.low}, got {value!r}')
        if domain.high is not None and high > domain.high:
            raise ValueError(f'{name} must be <= {domain.high}, got {value!r}')
    return low, high


def draw(rng, value, name, integer=False, domain=None):
    """A fixed number, or a uniform draw from a ``(low, high)`` pair (inclusive ints when ``integer``), after
    :func:`check_param` against ``domain`` (the check draws nothing, so it leaves the generator as it was)."""
    low, high = check_param(value, name, domain)
    if _is_real(value):
        return int(value) if integer else float(value)
    return int(rng.integers(int(low), int(high) + 1)) if integer else float(rng.uniform(low, high))


def draw_params(rng, fn, **values):
    """Draw the parameters ``values`` (name -> number or range) of the registered renderer ``fn``, in the order
    given, each checked against its domain; returns ``{name: float or int}``."""
    out = {}
    for key, value in values.items():
        domain = fn.domains[key]
        out[key] = draw(rng, value, f'{fn.where}.{key}', domain.integer, domain)
    return out


def float_image(img, name):
    """``img`` as a contiguous float32 ``H x W`` or ``H x W x C`` array; raise naming ``name`` otherwise."""
    img = np.asarray(img)
    if img.dtype != np.float32:
        raise TypeError(f'{name}: expected a float32 image in [0, 1], got dtype {img.dtype}')
    if img.ndim not in (2, 3):
        raise ValueError(f'{name}: expected an H x W or H x W x C image, got shape {img.shape}')
    return np.ascontiguousarray(img)


def check_maps(maps, name):
    """``maps`` if it is None or a dict to fill; raise naming ``name`` otherwise."""
    if maps is not None and not isinstance(maps, dict):
        raise TypeError(f'{name}: maps must be None or a dict to fill, got {type(maps).__name__}')
    return maps


def setup(img, rng, maps, name):
    """The checked ``(image, generator, maps)`` every renderer starts from."""
    return float_image(img, name), as_rng(rng), check_maps(maps, name)


def channels(img):
    """Number of channels of an ``H x W`` (1) or ``H x W x C`` image."""
    return 1 if img.ndim == 2 else img.shape[2]


def gaussian_field(rng, shape, sigma):
    """``N(0, sigma^2)`` float32 field of ``shape`` from OpenCV's generator, seeded from ``rng``."""
    field = np.empty(int(np.prod(shape)), np.float32)  # flat: OpenCV fills one channel fastest
    cv2.setRNGSeed(int(rng.integers(0, 2**31 - 1)))
    cv2.randn(field, 0.0, float(sigma))
    return field.reshape(shape)


def correlated_noise(rng, shape, corr):
    """Zero-mean, unit-std Gaussian noise of ``shape`` (``H x W`` or ``H x W x C``, channels independent) whose
    spatial correlation is a Gaussian of std ``corr`` pixels (0: white)."""
    field = gaussian_field(rng, shape, 1.0)
    if corr <= 0:
        return field
    k = cv2.getGaussianKernel(2 * int(np.ceil(3 * corr)) + 1, corr, cv2.CV_64F)
    # a Gaussian filter scales white noise's std by the kernel's L2 norm (sum of squares of the 1-D kernel, for
    # a separable 2-D one): dividing by it gives unit std again
    field = cv2.sepFilter2D(field, -1, k, k, borderType=cv2.BORDER_REFLECT)
    field *= np.float32(1.0 / float((k ** 2).sum()))
    return field


def fractal_field(rng, shape, roughness=0.5, base=3, octaves=5):
    """A smooth random field in [0, 1] with a power-law spectrum (clouds, fog banks, drifts).

    Octave ``k`` adds uniform noise on a grid ``2^k`` times finer than ``base`` cells across the longer side, with
    amplitude ``roughness^k``; each coarser sum is upsampled bicubically before the next octave is added, and the
    last one bilinearly to the image. The result is min-max normalised.

    Args:
        rng (Generator): Random generator.
        shape (tuple): (H, W).
        roughness (float): Amplitude ratio of successive octaves (0.5: a 1/f field; higher: more fine detail).
            Default: 0.5.
        base (int): Cells of the coarsest grid across the longer side. Default: 3.
        octaves (int): Number of octaves. Default: 5.

    Returns:
        ndarray: ``H x W`` float32 in [0, 1].
    """
    h, w = shape
    longer = max(h, w)
    gh, gw = max(2, round(base * h / longer)), max(2, round(base * w / longer))
    field = rng.random((gh, gw), dtype=np.float32)
    for k in range(1, octaves):
        gh, gw = 2 * gh, 2 * gw
        field = cv2.resize(field, (gw, gh), interpolation=cv2.INTER_CUBIC)
        field += np.float32(roughness ** k) * rng.random((gh, gw), dtype=np.float32)
    field = cv2.resize(field, (w, h), interpolation=cv2.INTER_LINEAR)
    low, high = cv2.minMaxLoc(field)[:2]
    field -= np.float32(low)
    field *= np.float32(1.0 / max(high - low, 1e-6))
    return field


def expand(mask, img):
    """An ``H x W`` map repeated to ``img``'s channels (OpenCV's channel copy beats numpy broadcasting 3x); a map
    that already has the image's shape is returned as it is."""
    if img.ndim == 2 or mask.ndim == 3:
        return mask
    if img.shape[2] == 3:
        return cv2.cvtColor(mask, cv2.COLOR_GRAY2BGR)
    return np.repeat(mask[..., None], img.shape[2], axis=2)


def scale_channels(img, gains):
    """``img`` times one gain per channel (``gains``: C values); OpenCV's per-channel scalar where it applies,
    which is 10x faster than numpy broadcasting over a last axis of 3."""
    gains = np.asarray(gains, np.float32).reshape(-1)
    if img.ndim == 2:
        return img * gains[0]
    if img.shape[2] <= 4:
        return cv2.multiply(img, tuple(float(g) for g in gains) + (0.0,) * (4 - img.shape[2]))
    return img * gains


def max_channel(img):
    """The ``H x W`` maximum over channels."""
    if img.ndim == 2:
        return img
    out = img[..., 0].copy()
    for c in range(1, img.shape[2]):
        np.maximum(out, img[..., c], out=out)  # a loop over channel views: 30x faster than img.max(axis=2)
    return out


def min_channel(img):
    """The ``H x W`` minimum over channels."""
    if img.ndim == 2:
        return img
    out = img[..., 0].copy()
    for c in range(1, img.shape[2]):
        np.minimum(out, img[..., c], out=out)
    return out


def mean_channel(img):
    """The ``H x W`` mean over channels (float32)."""
    if img.ndim == 2:
        return img
    out = img[..., 0].copy()
    for c in range(1, img.shape[2]):
        out += img[..., c]
    out *= np.float32(1.0 / img.shape[2])
    return out


def peak_gaussian(sigma):
    """1-D Gaussian kernel of std ``sigma`` scaled to peak 1 (a blob keeps its amplitude)."""
    k = cv2.getGaussianKernel(2 * int(np.ceil(2.5 * sigma)) + 1, sigma, cv2.CV_32F)
    return k / k.max()


def smooth(img, sigma, factor=4):
    """A Gaussian blur of std ``sigma`` px computed at ``1 / factor`` resolution (a wide blur for the price of a
    small one); ``H x W`` or ``H x W x C``."""
    h, w = img.shape[:2]
    sw, sh = max(1, w // factor), max(1, h // factor)
    small = cv2.resize(img, (sw, sh), interpolation=cv2.INTER_AREA)
    small = cv2.GaussianBlur(small, (0, 0), max(0.3, sigma * sw / w))
    out = cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)
    return out.reshape(img.shape)


def streak_layer(rng, shape, count, length, angle, width):
    """Sparse impulses smeared into streaks of ``length`` px at ``angle`` degrees from vertical.

    The impulses are drawn on a canvas that covers the rotated image, blurred along the canvas's vertical axis
    with a running box filter (O(1) per pixel whatever the length), widened by a short horizontal Gaussian with
    peak 1, and rotated onto the image with one affine warp: a rotated line kernel without a long 2-D filter.
    Returns an ``H x W`` float32 map whose streak cores hold the impulse amplitudes in [0.5, 1].
    """
    h, w = shape
    theta = np.deg2rad(angle)
    c, s = abs(np.cos(theta)), abs(np.sin(theta))
    cw, ch = int(np.ceil(w * c + h * s)) + 2, int(np.ceil(w * s + h * c)) + 2 + length
    canvas = np.zeros((ch, cw), np.float32)
    n = int(count * ch * cw / (h * w))
    canvas[rng.integers(0, ch, n), rng.integers(0, cw, n)] = rng.uniform(0.5, 1.0, n).astype(np.float32)
    canvas = cv2.blur(canvas, (1, length), borderType=cv2.BORDER_CONSTANT) * np.float32(length)
    if width > 0:
        canvas = cv2.sepFilter2D(canvas, -1, peak_gaussian(width), np.ones(1, np.float32),
                                 borderType=cv2.BORDER_CONSTANT)
    # affine map from image (x, y) to canvas: rotate about the centres
    m = cv2.getRotationMatrix2D((w / 2.0, h / 2.0), -float(angle), 1.0)
    m[:, 2] += (cw / 2.0 - w / 2.0, ch / 2.0 - h / 2.0)
    return cv2.warpAffine(canvas, m, (w, h), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                          borderMode=cv2.BORDER_CONSTANT)


def flake_mask(rng, shape, count, size, fall, angle):
    """Round Gaussian flakes of std ``size`` px (peak kept) smeared ``fall`` px along ``angle``: an ``H x W`` map
    with flake cores in [0.5, 1] (the original snow model's mask before its opacity)."""
    mask = streak_layer(rng, shape, count, fall + 1, angle, size)
    return cv2.sepFilter2D(mask, -1, np.ones(1, np.float32), peak_gaussian(size), borderType=cv2.BORDER_CONSTANT)
