"""Physics-based synthesis of single and composite degradations for on-the-fly training pairs.

Every degradation is a function ``f(img, rng=0, **params) -> (degraded, drawn)`` that a user can call alone:

* ``img``: float32 ``H x W x C`` image in [0, 1] (``H x W`` is accepted too). The functions act on every channel
  alike, so RGB and BGR work the same; only :func:`jpeg` assumes OpenCV's BGR order (its chroma subsampling).
* ``rng``: a ``numpy.random.Generator`` or an int seed (see :func:`make_rng`).
* ``params``: each parameter is a fixed number or a ``(low, high)`` pair from which a value is drawn uniformly.
* ``drawn``: the dict of values actually drawn (floats), so a sample can carry its degradation parameters.
* ``maps``: optional dict that the function fills with the *physical maps* of what it did (``H x W`` float32 maps
  and floats, e.g. the rain layer or the haze transmission; see each function). None (the default) costs nothing:
  the degraded image is bit-identical either way, and no map is computed or kept.

:func:`synthesize` composes several degradations in the fixed physical order of :data:`ORDER`
(low light -> rain -> snow -> haze -> noise -> blur -> JPEG; ``shared/design/protocols.md``), with a generator
derived from ``(seed, index)`` only: the same seed and index give the same pair in any process, whatever the
number of data-loader workers. Per-pixel Gaussian fields come from OpenCV's (thread-local) generator seeded from
that generator, which is several times faster than numpy's; the result is therefore deterministic for a given
numpy/OpenCV pair of versions. Everything is vectorised numpy/OpenCV on single-channel maps where the physics
allows, so the hardest CDD-11 category costs about one PNG decode of the same patch (``benchmarks/bench_data.py``).
"""
import inspect
import numbers

import cv2
import numpy as np

#: the CDD-11 categories (OneRestore), in the order of the benchmark tables.
CDD11_CATEGORIES = ('low', 'haze', 'rain', 'snow', 'low_haze', 'low_rain', 'low_snow', 'haze_rain', 'haze_snow',
                    'low_haze_rain', 'low_haze_snow')
#: the physical order in which a composite is applied.
ORDER = ('low_light', 'rain', 'snow', 'haze', 'noise', 'blur', 'jpeg')
#: CDD-11 category-name part -> degradation name.
CATEGORY_PARTS = {'low': 'low_light', 'haze': 'haze', 'rain': 'rain', 'snow': 'snow'}


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


def _as_rng(rng):
    if isinstance(rng, np.random.Generator):
        return rng
    if isinstance(rng, numbers.Integral):
        return make_rng(rng)
    raise TypeError(f'rng must be a numpy Generator or an int seed, got {type(rng).__name__}')


def _draw(rng, value, name, integer=False):
    """A fixed number, or a uniform draw from a ``(low, high)`` pair (inclusive ints when ``integer``)."""
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        return int(value) if integer else float(value)
    if isinstance(value, (list, tuple)) and len(value) == 2 and all(isinstance(v, numbers.Real) for v in value):
        low, high = value
        if low > high:
            raise ValueError(f'{name}: range {list(value)} has low > high')
        return int(rng.integers(int(low), int(high) + 1)) if integer else float(rng.uniform(low, high))
    raise ValueError(f'{name} must be a number or a [low, high] pair, got {value!r}')


def _float_image(img, name):
    img = np.asarray(img)
    if img.dtype != np.float32:
        raise TypeError(f'{name}: expected a float32 image in [0, 1], got dtype {img.dtype}')
    if img.ndim not in (2, 3):
        raise ValueError(f'{name}: expected an H x W or H x W x C image, got shape {img.shape}')
    return np.ascontiguousarray(img)


def _gaussian_field(rng, shape, sigma):
    """``N(0, sigma^2)`` float32 field of ``shape`` from OpenCV's generator, seeded from ``rng``."""
    field = np.empty(int(np.prod(shape)), np.float32)  # flat: OpenCV fills one channel fastest
    cv2.setRNGSeed(int(rng.integers(0, 2**31 - 1)))
    cv2.randn(field, 0.0, float(sigma))
    return field.reshape(shape)


def _expand(mask, img):
    """An ``H x W`` map repeated to ``img``'s channels (OpenCV's channel copy beats numpy broadcasting 3x)."""
    if img.ndim == 2:
        return mask
    if img.shape[2] == 3:
        return cv2.cvtColor(mask, cv2.COLOR_GRAY2BGR)
    return np.repeat(mask[..., None], img.shape[2], axis=2)


def _check_maps(maps, name):
    if maps is not None and not isinstance(maps, dict):
        raise TypeError(f'{name}: maps must be None or a dict to fill, got {type(maps).__name__}')
    return maps


def _max_channel(img):
    if img.ndim == 2:
        return img
    out = img[..., 0].copy()
    for c in range(1, img.shape[2]):
        np.maximum(out, img[..., c], out=out)  # a loop over channel views: 30x faster than img.max(axis=2)
    return out


def _peak_gaussian(sigma):
    """1-D Gaussian kernel of std ``sigma`` scaled to peak 1 (a blob keeps its amplitude)."""
    k = cv2.getGaussianKernel(2 * int(np.ceil(2.5 * sigma)) + 1, sigma, cv2.CV_32F)
    return k / k.max()


def _streak_layer(rng, shape, count, length, angle, width):
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
        canvas = cv2.sepFilter2D(canvas, -1, _peak_gaussian(width), np.ones(1, np.float32),
                                 borderType=cv2.BORDER_CONSTANT)
    # affine map from image (x, y) to canvas: rotate about the centres
    m = cv2.getRotationMatrix2D((w / 2.0, h / 2.0), -float(angle), 1.0)
    m[:, 2] += (cw / 2.0 - w / 2.0, ch / 2.0 - h / 2.0)
    return cv2.warpAffine(canvas, m, (w, h), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                          borderMode=cv2.BORDER_CONSTANT)


def low_light(img, rng=0, gamma=(2.0, 3.0), noise_sigma=(0.03, 0.08), smooth=0.05, maps=None):
    """Retinex low light: relight ``J * L^(gamma - 1)`` with ``L`` the smoothed max-channel map, plus noise.

    Retinex writes ``J = R * L``; the same scene under the dimmer illumination ``L^gamma`` is
    ``R * L^gamma = J * L^(gamma - 1)``, darkest where the scene is dark, as in real night shots.

    Args:
        img (ndarray): float32 image in [0, 1].
        rng (Generator | int): Random generator or seed. Default: 0.
        gamma (float | tuple): Illumination exponent. Default: (2.0, 3.0).
        noise_sigma (float | tuple): Std of the additive Gaussian sensor noise (on the [0, 1] scale).
            Default: (0.03, 0.08).
        smooth (float): Std of the Gaussian that smooths the max-channel map, as a fraction of the shorter
            side. Default: 0.05.
        maps (dict | None): Filled with ``illumination`` (``L``, H x W), ``gain`` (``L^(gamma - 1)``, H x W, the
            factor the image was multiplied by) and ``noise_sigma`` (float). Default: None.

    Returns:
        tuple: (degraded float32 image, {'gamma', 'noise_sigma'}).
    """
    img, rng, maps = _float_image(img, 'low_light'), _as_rng(rng), _check_maps(maps, 'low_light')
    g = _draw(rng, gamma, 'low_light.gamma')
    sigma = _draw(rng, noise_sigma, 'low_light.noise_sigma')
    h, w = img.shape[:2]
    light = _max_channel(img)
    # smooth at 1/8 resolution: a wide Gaussian for the price of a small one
    small = cv2.resize(light, (max(1, w // 8), max(1, h // 8)), interpolation=cv2.INTER_AREA)
    small = cv2.GaussianBlur(small, (0, 0), max(0.5, smooth * min(h, w) / 8))
    light = cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)
    gain = cv2.pow(np.maximum(light, 1e-3), g - 1.0)
    out = cv2.multiply(img, _expand(gain, img))
    out += _gaussian_field(rng, img.shape, sigma)
    if maps is not None:
        maps.update(illumination=light, gain=gain, noise_sigma=sigma)
    return np.clip(out, 0.0, 1.0, out=out), {'gamma': g, 'noise_sigma': sigma}


def rain(img, rng=0, density=(0.002, 0.008), length=(10, 30), angle=(-25.0, 25.0), width=(0.5, 1.2),
         intensity=(0.25, 0.6), maps=None):
    """Additive rain streaks: sparse impulses blurred by a rotated line kernel, added and clipped.

    Args:
        img (ndarray): float32 image in [0, 1].
        rng (Generator | int): Random generator or seed. Default: 0.
        density (float | tuple): Streaks per pixel. Default: (0.002, 0.008).
        length (int | tuple): Streak length in pixels. Default: (10, 30).
        angle (float | tuple): Streak angle from vertical, degrees. Default: (-25, 25).
        width (float | tuple): Std of the streak cross-section, pixels. Default: (0.5, 1.2).
        intensity (float | tuple): Peak brightness a streak adds. Default: (0.25, 0.6).
        maps (dict | None): Filled with ``rain``: the additive streak layer (H x W, before clipping). Default: None.

    Returns:
        tuple: (degraded float32 image, {'density', 'length', 'angle', 'width', 'intensity'}).
    """
    img, rng, maps = _float_image(img, 'rain'), _as_rng(rng), _check_maps(maps, 'rain')
    p = {'density': _draw(rng, density, 'rain.density'), 'length': _draw(rng, length, 'rain.length', integer=True),
         'angle': _draw(rng, angle, 'rain.angle'), 'width': _draw(rng, width, 'rain.width'),
         'intensity': _draw(rng, intensity, 'rain.intensity')}
    h, w = img.shape[:2]
    streaks = _streak_layer(rng, (h, w), p['density'] * h * w, max(1, p['length']), p['angle'], p['width'])
    layer = streaks * np.float32(p['intensity'])
    if maps is not None:
        maps['rain'] = layer
    out = img + _expand(layer, img)
    return np.clip(out, 0.0, 1.0, out=out), {k: float(v) for k, v in p.items()}


def snow(img, rng=0, density=(0.003, 0.008), size=(0.5, 1.5), fall=(0, 6), angle=(-30.0, 30.0),
         opacity=(0.7, 1.0), maps=None):
    """Snow: ``J (1 - M) + M`` with a synthetic flake mask ``M`` in [0, 1].

    Flakes are impulses widened into round Gaussian blobs of std ``size`` (peak kept) and smeared ``fall`` pixels
    along their fall direction.

    Args:
        img (ndarray): float32 image in [0, 1].
        rng (Generator | int): Random generator or seed. Default: 0.
        density (float | tuple): Flakes per pixel. Default: (0.003, 0.008).
        size (float | tuple): Flake radius (Gaussian std), pixels. Default: (0.5, 1.5).
        fall (int | tuple): Motion smear of a flake, pixels (0: round flakes). Default: (0, 6).
        angle (float | tuple): Fall direction from vertical, degrees. Default: (-30, 30).
        opacity (float | tuple): Opacity of the densest flake core. Default: (0.7, 1.0).
        maps (dict | None): Filled with ``snow``: the flake mask ``M`` (H x W, in [0, 1]). Default: None.

    Returns:
        tuple: (degraded float32 image, {'density', 'size', 'fall', 'angle', 'opacity'}).
    """
    img, rng, maps = _float_image(img, 'snow'), _as_rng(rng), _check_maps(maps, 'snow')
    p = {'density': _draw(rng, density, 'snow.density'), 'size': _draw(rng, size, 'snow.size'),
         'fall': _draw(rng, fall, 'snow.fall', integer=True), 'angle': _draw(rng, angle, 'snow.angle'),
         'opacity': _draw(rng, opacity, 'snow.opacity')}
    h, w = img.shape[:2]
    mask = _streak_layer(rng, (h, w), p['density'] * h * w, p['fall'] + 1, p['angle'], p['size'])
    ky = _peak_gaussian(p['size'])  # the streak layer widened the flakes across; round them along too
    mask = cv2.sepFilter2D(mask, -1, np.ones(1, np.float32), ky, borderType=cv2.BORDER_CONSTANT)
    mask = np.clip(mask * np.float32(p['opacity']), 0.0, 1.0)
    if maps is not None:
        maps['snow'] = mask
    mask = _expand(mask, img)
    out = cv2.multiply(img, 1.0 - mask)
    out += mask
    return out, {k: float(v) for k, v in p.items()}


def synthetic_depth(rng, shape, horizon=(0.3, 0.7), roughness=(0.1, 0.4)):
    """A normalised depth map in [0, 1] (1 = far): a ground plane receding to a horizon plus smooth relief.

    Args:
        rng (Generator | int): Random generator or seed.
        shape (tuple): (H, W).
        horizon (float | tuple): Height of the horizon as a fraction of H from the top. Default: (0.3, 0.7).
        roughness (float | tuple): Weight of the low-frequency random relief. Default: (0.1, 0.4).

    Returns:
        tuple: (H x W float32 depth, {'horizon', 'roughness'}).
    """
    rng = _as_rng(rng)
    hz, rough = _draw(rng, horizon, 'depth.horizon'), _draw(rng, roughness, 'depth.roughness')
    h, w = shape
    rows = np.linspace(0.0, 1.0, h, dtype=np.float32)
    # sky above the horizon is far (1); the ground below comes closer towards the bottom row (0)
    plane = np.clip((1.0 - rows) / (1.0 - hz), 0.0, 1.0) ** np.float32(0.7)
    # smooth relief: a 4x4 random grid, bicubic to 32x32, then bilinear to full size (bicubic all the way is 10x
    # slower and no smoother at this scale)
    relief = cv2.resize(rng.random((4, 4), dtype=np.float32), (32, 32), interpolation=cv2.INTER_CUBIC)
    relief = cv2.resize(relief, (w, h), interpolation=cv2.INTER_LINEAR)
    depth = relief * np.float32(rough)
    depth += (np.float32(1.0 - rough) * plane)[:, None]
    low, high = cv2.minMaxLoc(depth)[:2]
    depth -= np.float32(low)
    depth *= np.float32(1.0 / max(high - low, 1e-6))
    return depth, {'horizon': hz, 'roughness': rough}


def haze(img, rng=0, beta=(1.0, 2.0), airlight=(0.6, 1.0), depth=None, maps=None):
    """Atmospheric scattering: ``J t + A (1 - t)``, ``t = exp(-beta d)``.

    Args:
        img (ndarray): float32 image in [0, 1].
        rng (Generator | int): Random generator or seed. Default: 0.
        beta (float | tuple): Scattering coefficient on normalised depth (RESIDE OTS: 0.04-0.2 on metric
            depth). Default: (1.0, 2.0).
        airlight (float | tuple): Global atmospheric light ``A`` (grey). Default: (0.6, 1.0).
        depth (ndarray | None): ``H x W`` (or ``H x W x 1``) depth normalised to [0, 1] (1 = far; values
            outside are clipped); None draws a :func:`synthetic_depth`. Default: None.
        maps (dict | None): Filled with ``transmission`` (``t``, H x W) and ``airlight`` (``A``, float).
            Default: None.

    Returns:
        tuple: (degraded float32 image, {'beta', 'airlight'} plus the synthetic depth's parameters).
    """
    img, rng, maps = _float_image(img, 'haze'), _as_rng(rng), _check_maps(maps, 'haze')
    p = {'beta': _draw(rng, beta, 'haze.beta'), 'airlight': _draw(rng, airlight, 'haze.airlight')}
    h, w = img.shape[:2]
    if depth is None:
        d, extra = synthetic_depth(rng, (h, w))
        p.update({f'depth_{k}': v for k, v in extra.items()})
    else:
        d = np.asarray(depth, np.float32).reshape(np.shape(depth)[:2])
        if d.shape != (h, w):
            raise ValueError(f'haze: depth map {d.shape} does not match the image {(h, w)}')
        d = np.clip(d, 0.0, 1.0)  # already normalised over the whole image: a crop keeps its depth range
    t = cv2.exp(d * np.float32(-p['beta']))
    if maps is not None:
        maps.update(transmission=t, airlight=p['airlight'])
    t = _expand(t, img)
    a = np.float32(p['airlight'])
    out = cv2.multiply(img - a, t)
    out += a
    return out, p


def noise(img, rng=0, sigma=25.0, quantize=False, maps=None):
    """Additive white Gaussian noise of std ``sigma / 255``, clipped to [0, 1].

    Args:
        img (ndarray): float32 image in [0, 1].
        rng (Generator | int): Random generator or seed. Default: 0.
        sigma (float | tuple): Noise std on the 0-255 scale (3-task protocol: 15, 25 or 50). Default: 25.
        quantize (bool): Round the result to 8-bit levels, as protocols that add noise to uint8 images and
            store uint8 (AirNet/PromptIR). Default: False.
        maps (dict | None): Filled with ``noise_sigma``: the std on the [0, 1] scale (``sigma / 255``).
            Default: None.

    Returns:
        tuple: (degraded float32 image, {'sigma'}).
    """
    img, rng, maps = _float_image(img, 'noise'), _as_rng(rng), _check_maps(maps, 'noise')
    s = _draw(rng, sigma, 'noise.sigma')
    if maps is not None:
        maps['noise_sigma'] = s / 255.0
    out = np.clip(img + _gaussian_field(rng, img.shape, s / 255.0), 0.0, 1.0)
    if quantize:
        out = np.round(out * 255.0) / np.float32(255.0)
    return out.astype(np.float32, copy=False), {'sigma': s}


def blur_kernel(kind, size, angle):
    """A normalised blur kernel: ``'motion'`` (a line of ``size`` px at ``angle`` degrees) or ``'gaussian'``
    (std ``size / 6``, support ``size``); ``size`` is made odd."""
    k = int(size) | 1
    if kind == 'gaussian':
        g = cv2.getGaussianKernel(k, k / 6.0, cv2.CV_32F)
        return g @ g.T
    if kind != 'motion':
        raise ValueError(f"blur.kind must be 'motion' or 'gaussian', got {kind!r}")
    line = np.zeros((k, k), np.float32)
    line[k // 2, :] = 1.0
    m = cv2.getRotationMatrix2D((k // 2, k // 2), float(angle), 1.0)
    line = cv2.warpAffine(line, m, (k, k), flags=cv2.INTER_LINEAR)
    return line / line.sum()


def blur(img, rng=0, kind=('motion', 'gaussian'), size=(5, 21), angle=(0.0, 180.0), maps=None):
    """Blur with a motion (line) or Gaussian kernel.

    Args:
        img (ndarray): float32 image in [0, 1].
        rng (Generator | int): Random generator or seed. Default: 0.
        kind (str | tuple[str]): ``'motion'``, ``'gaussian'``, or a tuple of them to choose from uniformly.
            Default: ('motion', 'gaussian').
        size (int | tuple): Kernel support in pixels (odd). Default: (5, 21).
        angle (float | tuple): Motion direction, degrees (drawn for both kinds, used by 'motion').
            Default: (0, 180).
        maps (dict | None): Filled with ``blur_kernel`` (the normalised kernel, k x k). Default: None.

    Returns:
        tuple: (degraded float32 image, {'motion' (1.0 or 0.0), 'size', 'angle'}).
    """
    img, rng, maps = _float_image(img, 'blur'), _as_rng(rng), _check_maps(maps, 'blur')
    kinds = (kind,) if isinstance(kind, str) else tuple(kind)
    chosen = kinds[int(rng.integers(len(kinds)))]
    size_px = _draw(rng, size, 'blur.size', integer=True) | 1
    ang = _draw(rng, angle, 'blur.angle')
    kernel = blur_kernel(chosen, size_px, ang)
    if maps is not None:
        maps['blur_kernel'] = kernel
    out = cv2.filter2D(img, -1, kernel, borderType=cv2.BORDER_REFLECT)
    return out, {'motion': float(chosen == 'motion'), 'size': float(size_px), 'angle': ang}


def jpeg(img, rng=0, quality=(30, 95), maps=None):
    """JPEG compression at a drawn quality (OpenCV's encoder, which takes BGR order).

    Args:
        img (ndarray): float32 image in [0, 1], BGR (or grey).
        rng (Generator | int): Random generator or seed. Default: 0.
        quality (int | tuple): JPEG quality 1-100. Default: (30, 95).
        maps (dict | None): Filled with ``jpeg_quality`` (float). Default: None.

    Returns:
        tuple: (degraded float32 image, {'quality'}).
    """
    img, rng, maps = _float_image(img, 'jpeg'), _as_rng(rng), _check_maps(maps, 'jpeg')
    q = _draw(rng, quality, 'jpeg.quality', integer=True)
    if maps is not None:
        maps['jpeg_quality'] = float(q)
    ok, buf = cv2.imencode('.jpg', np.round(np.clip(img, 0, 1) * 255).astype(np.uint8),
                           [cv2.IMWRITE_JPEG_QUALITY, q])
    out = cv2.imdecode(buf, cv2.IMREAD_UNCHANGED).astype(np.float32) / np.float32(255.0)
    return out.reshape(img.shape), {'quality': float(q)}


#: degradation name -> function, in :data:`ORDER`.
DEGRADATIONS = {'low_light': low_light, 'rain': rain, 'snow': snow, 'haze': haze, 'noise': noise, 'blur': blur,
                'jpeg': jpeg}


def category_spec(category):
    """The synthesis spec of a CDD-11 category name, e.g. ``'low_haze_rain'`` -> low light, rain and haze with
    default parameters.

    Args:
        category (str): One of :data:`CDD11_CATEGORIES`.

    Returns:
        dict: ``{degradation name: {}}``.
    """
    if category not in CDD11_CATEGORIES:
        raise ValueError(f'unknown CDD-11 category {category!r}; expected one of {", ".join(CDD11_CATEGORIES)}')
    return {CATEGORY_PARTS[part]: {} for part in category.split('_')}


def parse_spec(spec):
    """Validate a synthesis spec and put it in :data:`ORDER`.

    Args:
        spec (str | dict): A CDD-11 category name, or ``{degradation: {param: value}}`` with names from
            :data:`DEGRADATIONS` and each function's keyword parameters (``{}`` or None: defaults).

    Returns:
        tuple: ``((name, kwargs), ...)`` in physical order.
    """
    if isinstance(spec, str):
        spec = category_spec(spec)
    if not isinstance(spec, dict) or not spec:
        raise ValueError(f'synthesis spec must be a CDD-11 category name or a non-empty mapping, got {spec!r}')
    steps = []
    for name in spec:
        if name not in DEGRADATIONS:
            raise ValueError(f'unknown degradation {name!r} in synthesis spec; expected one of {", ".join(ORDER)}')
    for name in ORDER:
        if name not in spec:
            continue
        kwargs = dict(spec[name] or {})
        allowed = set(inspect.signature(DEGRADATIONS[name]).parameters) - {'img', 'rng', 'depth', 'maps'}
        unknown = sorted(set(kwargs) - allowed)
        if unknown:
            raise ValueError(f'unknown parameter(s) {unknown} for degradation {name!r}; '
                             f'allowed: {", ".join(sorted(allowed))}')
        steps.append((name, kwargs))
    return tuple(steps)


def synthesize(img, spec, seed=0, index=0, depth=None, return_maps=False, draw=None):
    """Apply a composite degradation in physical order with a generator derived from ``(seed, index)`` (and
    ``draw``).

    Args:
        img (ndarray): Clean float32 image in [0, 1] (BGR for a spec with JPEG).
        spec (str | dict | tuple): A CDD-11 category name, a spec mapping, or the output of :func:`parse_spec`.
        seed (int): Experiment seed. Default: 0.
        index (int): Sample index. Default: 0.
        depth (ndarray | None): Depth map for haze (None: synthetic). Default: None.
        return_maps (bool): Also return the physical maps of the composite (see :func:`composite_maps`); the
            degraded image is bit-identical either way. Default: False.
        draw (int | None): Third key of the generator (:func:`make_rng`); the training set passes a fresh random
            number per access so that an index gets new parameters and noise every epoch. Default: None.

    Returns:
        tuple: (degraded float32 image, ``{'<degradation>.<param>': float}``), plus the maps dict when
        ``return_maps``.
    """
    steps = spec if isinstance(spec, tuple) else parse_spec(spec)
    rng = make_rng(seed, index, draw)
    clean = out = _float_image(img, 'synthesize')
    drawn, parts = {}, [] if return_maps else None
    for name, kwargs in steps:
        extra = {'depth': depth} if name == 'haze' else {}
        if parts is not None:
            parts.append({})
            extra['maps'] = parts[-1]
        out, params = DEGRADATIONS[name](out, rng, **kwargs, **extra)
        drawn.update({f'{name}.{k}': v for k, v in params.items()})
    if parts is None:
        return out, drawn
    return out, drawn, composite_maps(clean, out, parts)


def composite_maps(clean, degraded, parts):
    """Merge the maps of the steps of one composite and add the additive ``layer`` it implies.

    The maps, all ``H x W`` float32 unless said otherwise:

    * ``illumination`` (``L``) and ``gain`` (``L^(gamma - 1)``, in (0, 1]): low light;
    * ``rain``: the additive streak layer before clipping; ``snow``: the flake mask ``M`` in [0, 1];
    * ``transmission`` (``t``) and ``airlight`` (``A``, float): haze;
    * ``noise_sigma`` (float, [0, 1] scale): the std of the Gaussian noise added, low light's and
      :func:`noise`'s combined as ``sqrt(s1^2 + s2^2)`` (before clipping, and before haze attenuates low light's);
    * ``blur_kernel`` (k x k) and ``jpeg_quality`` (float) when the spec has blur or JPEG;
    * ``layer`` (shape of the image): the additive layer ``R`` that makes
      ``D = (J G + R) t + A (1 - t)`` exact, i.e. ``R = (D - A (1 - t)) / t - J G`` with ``G = gain``,
      ``t = transmission``, ``A = airlight`` (1, 1 and 0 where the spec has no low light or haze). It holds the
      rain, the snow (``M (1 - J G)``), the sensor noise and the clipping.

    Args:
        clean (ndarray): The clean image ``J``.
        degraded (ndarray): The composite ``D``.
        parts (list[dict]): The maps each step filled, in order.

    Returns:
        dict: The maps.
    """
    maps = {}
    for part in parts:
        for key, value in part.items():
            if key == 'noise_sigma' and key in maps:
                value = float(np.hypot(maps[key], value))
            maps[key] = value
    base = clean * _expand(maps['gain'], clean) if 'gain' in maps else clean.copy()
    layer = degraded.astype(np.float32, copy=True)
    if 'transmission' in maps:
        t = _expand(maps['transmission'], clean)
        layer -= np.float32(maps['airlight']) * (1.0 - t)
        layer /= t
    layer -= base
    maps['layer'] = layer
    return maps
