"""Physics-based synthesis of single and composite degradations for on-the-fly training pairs.

Every degradation is a function ``f(img, rng=0, **params) -> (degraded, drawn)`` that a user can call alone:

* ``img``: float32 ``H x W x C`` image in [0, 1] (``H x W`` is accepted too). No function assumes a channel order
  (per-channel draws, such as a renderer's white balance, are drawn alike for every channel), so RGB and BGR work
  the same; only :func:`jpeg` assumes OpenCV's BGR order (its chroma subsampling).
* ``rng``: a ``numpy.random.Generator`` or an int seed (see :func:`make_rng`).
* ``params``: each parameter is a fixed number or a ``(low, high)`` pair from which a value is drawn uniformly.
* ``drawn``: the dict of values actually drawn (floats), so a sample can carry its degradation parameters.
* ``maps``: optional dict that the function fills with the *physical maps* of what it did (``H x W`` float32 maps
  and floats, e.g. the rain layer or the haze transmission; see each function). None (the default) costs nothing:
  the degraded image is bit-identical either way, and no map is computed or kept.

Low light, rain, snow and haze each have several formation models, :data:`RENDERERS`
(:mod:`interir_plugin.data.renderers`); the functions of this module with those names are the original ones, and a
spec chooses others with ``renderer`` (:func:`parse_spec`).

:func:`synthesize` composes several degradations in the fixed physical order of :data:`ORDER`
(low light -> rain -> snow -> haze -> noise -> blur -> JPEG; ``shared/design/protocols.md``), with a generator
derived from ``(seed, index)`` only: the same seed and index give the same pair in any process, whatever the
number of data-loader workers. Per-pixel Gaussian fields come from OpenCV's (thread-local) generator seeded from
that generator, which is several times faster than numpy's; the result is therefore deterministic for a given
numpy/OpenCV pair of versions. Everything is vectorised numpy/OpenCV on single-channel maps where the physics
allows, so the hardest CDD-11 category costs about one PNG decode of the same patch (``benchmarks/bench_data.py``).
"""
import functools
import inspect

import cv2
import numpy as np

from interir_plugin.data.renderers import RENDERERS, renderer_names
from interir_plugin.data.renderers._common import (
    as_rng,
    check_maps,
    check_param,
    draw,
    expand,
    float_image,
    gaussian_field,
    make_rng,
)
from interir_plugin.data.renderers.haze import scatter as haze
from interir_plugin.data.renderers.haze import synthetic_depth
from interir_plugin.data.renderers.low_light import retinex as low_light
from interir_plugin.data.renderers.rain import streaks as rain
from interir_plugin.data.renderers.snow import flakes as snow

__all__ = ['CATEGORY_PARTS', 'CDD11_CATEGORIES', 'DEGRADATIONS', 'ORDER', 'RENDERERS', 'blur', 'blur_kernel',
           'category_spec', 'composite_maps', 'haze', 'jpeg', 'low_light', 'make_rng', 'noise', 'parse_spec', 'rain',
           'snow', 'synthesize', 'synthetic_depth']

#: the CDD-11 categories (OneRestore), in the order of the benchmark tables.
CDD11_CATEGORIES = ('low', 'haze', 'rain', 'snow', 'low_haze', 'low_rain', 'low_snow', 'haze_rain', 'haze_snow',
                    'low_haze_rain', 'low_haze_snow')
#: the physical order in which a composite is applied.
ORDER = ('low_light', 'rain', 'snow', 'haze', 'noise', 'blur', 'jpeg')
#: CDD-11 category-name part -> degradation name.
CATEGORY_PARTS = {'low': 'low_light', 'haze': 'haze', 'rain': 'rain', 'snow': 'snow'}
#: keys of a spec's category form, ``{category: low_haze, renderers: {haze: fog}}``.
CATEGORY_SPEC_KEYS = ('category', 'renderers')

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
    img, rng, maps = float_image(img, 'noise'), as_rng(rng), check_maps(maps, 'noise')
    s = draw(rng, sigma, 'noise.sigma')
    if maps is not None:
        maps['noise_sigma'] = s / 255.0
    out = np.clip(img + gaussian_field(rng, img.shape, s / 255.0), 0.0, 1.0)
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
    img, rng, maps = float_image(img, 'blur'), as_rng(rng), check_maps(maps, 'blur')
    kinds = (kind,) if isinstance(kind, str) else tuple(kind)
    chosen = kinds[int(rng.integers(len(kinds)))]
    size_px = draw(rng, size, 'blur.size', integer=True) | 1
    ang = draw(rng, angle, 'blur.angle')
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
    img, rng, maps = float_image(img, 'jpeg'), as_rng(rng), check_maps(maps, 'jpeg')
    q = draw(rng, quality, 'jpeg.quality', integer=True)
    if maps is not None:
        maps['jpeg_quality'] = float(q)
    ok, buf = cv2.imencode('.jpg', np.round(np.clip(img, 0, 1) * 255).astype(np.uint8),
                           [cv2.IMWRITE_JPEG_QUALITY, q])
    out = cv2.imdecode(buf, cv2.IMREAD_UNCHANGED).astype(np.float32) / np.float32(255.0)
    return out.reshape(img.shape), {'quality': float(q)}



#: degradation name -> function, in :data:`ORDER` (for low light, rain, snow and haze: the original renderer).
DEGRADATIONS = {'low_light': low_light, 'rain': rain, 'snow': snow, 'haze': haze, 'noise': noise, 'blur': blur,
                'jpeg': jpeg}
#: the arguments of a degradation function that a spec cannot set.
_NOT_SPEC = ('img', 'rng', 'depth', 'maps')


def _renderer_choice(name, value):
    """Check the ``renderer`` of degradation ``name``: one renderer name, or a non-empty list of them (one drawn per
    sample; a name may repeat to weigh it). Returns the name, or a tuple of names."""
    allowed = renderer_names(name)  # names the degradation when it has no renderers
    names = (value,) if isinstance(value, str) else value
    if not isinstance(names, (list, tuple)) or not names or not all(isinstance(n, str) for n in names):
        raise ValueError(f'{name}.renderer must be a renderer name or a non-empty list of names, got {value!r}')
    unknown = [n for n in names if n not in allowed]
    if unknown:
        raise ValueError(f'unknown renderer(s) {unknown} for degradation {name!r}; allowed: {", ".join(allowed)}')
    return value if isinstance(value, str) else tuple(names)


def category_spec(category, renderers=None):
    """The synthesis spec of a CDD-11 category name, e.g. ``'low_haze_rain'`` -> low light, rain and haze with
    default parameters.

    Args:
        category (str): One of :data:`CDD11_CATEGORIES`.
        renderers (dict | None): Degradation -> renderer name or list of names (``{low_light: [retinex, camera],
            haze: fog}``). Every entry is checked; those of degradations the category lacks do not apply, so one
            mapping can serve every category. Default: None (the original renderers).

    Returns:
        dict: ``{degradation name: {}}`` (``{'renderer': ...}`` where ``renderers`` names one).
    """
    if not isinstance(category, str) or category not in CDD11_CATEGORIES:
        raise ValueError(f'unknown CDD-11 category {category!r}; expected one of {", ".join(CDD11_CATEGORIES)}')
    if renderers is not None and not isinstance(renderers, dict):
        raise ValueError(f'renderers must map degradations to renderer names, got {renderers!r}')
    chosen = {name: _renderer_choice(name, value) for name, value in (renderers or {}).items()}
    parts = [CATEGORY_PARTS[part] for part in category.split('_')]
    return {name: ({'renderer': chosen[name]} if name in chosen else {}) for name in parts}


def _function(name, kwargs):
    """The function a spec step calls: the named renderer, else the degradation's own."""
    choice = kwargs.get('renderer')
    return DEGRADATIONS[name] if choice is None or isinstance(choice, tuple) else RENDERERS[name][choice]


def parse_spec(spec):
    """Validate a synthesis spec and put it in :data:`ORDER`.

    Args:
        spec (str | dict): A CDD-11 category name; ``{category: <name>, renderers: {degradation: renderer(s)}}``
            (:func:`category_spec`); or ``{degradation: {param: value}}`` with names from :data:`DEGRADATIONS` and
            each function's keyword parameters (``{}`` or None: defaults). For low light, rain, snow and haze the
            parameters may hold ``renderer``: a name from :data:`RENDERERS` (its parameters may then be set) or a
            list of names, one drawn per sample (then no other parameter). Values are checked against each
            parameter's domain here, before anything is rendered.

    Returns:
        tuple: ``((name, kwargs), ...)`` in physical order (``kwargs['renderer']``: a name or a tuple of names).
    """
    if isinstance(spec, str):
        spec = category_spec(spec)
    elif isinstance(spec, dict) and 'category' in spec:
        unknown = sorted(set(spec) - set(CATEGORY_SPEC_KEYS))
        if unknown:
            raise ValueError(f'unknown key(s) {unknown} in a category synthesis spec; allowed: '
                             f'{", ".join(CATEGORY_SPEC_KEYS)}')
        spec = category_spec(spec['category'], spec.get('renderers'))
    if not isinstance(spec, dict) or not spec:
        raise ValueError(f'synthesis spec must be a CDD-11 category name or a non-empty mapping, got {spec!r}')
    steps = []
    for name in spec:
        if name not in DEGRADATIONS:
            raise ValueError(f'unknown degradation {name!r} in synthesis spec; expected one of {", ".join(ORDER)}')
    for name in ORDER:
        if name not in spec:
            continue
        if spec[name] is not None and not isinstance(spec[name], dict):
            raise ValueError(f'the parameters of degradation {name!r} must be a mapping, got {spec[name]!r}')
        kwargs = dict(spec[name] or {})
        if 'renderer' in kwargs:
            kwargs['renderer'] = _renderer_choice(name, kwargs['renderer'])
            if isinstance(kwargs['renderer'], tuple) and len(kwargs) > 1:
                raise ValueError(f'{name}: renderer is a list {list(kwargs["renderer"])}, so the parameters '
                                 f'{sorted(set(kwargs) - {"renderer"})} cannot be set (each renderer has its own); '
                                 'name a single renderer to set them')
        fn = _function(name, kwargs)
        allowed = set(inspect.signature(fn).parameters) - set(_NOT_SPEC)
        allowed |= {'renderer'} if name in RENDERERS else set()
        unknown = sorted(set(kwargs) - allowed)
        if unknown:
            which = f' renderer {kwargs["renderer"]!r}' if isinstance(kwargs.get('renderer'), str) else ''
            raise ValueError(f'unknown parameter(s) {unknown} for degradation {name!r}{which}; '
                             f'allowed: {", ".join(sorted(allowed))}')
        for key, value in kwargs.items():
            if key in getattr(fn, 'domains', {}):
                check_param(value, f'{fn.where}.{key}', fn.domains[key])
        steps.append((name, kwargs))
    return tuple(steps)


@functools.cache
def _takes_depth(fn):
    return 'depth' in inspect.signature(fn).parameters


def synthesize(img, spec, seed=0, index=0, depth=None, return_maps=False, draw=None):
    """Apply a composite degradation in physical order with a generator derived from ``(seed, index)`` (and
    ``draw``).

    A step whose spec names a list of renderers draws one from the generator first; a step with a renderer
    records it in the drawn values as ``'<degradation>.renderer'`` (a string). A spec without ``renderer`` draws
    exactly what it drew before renderers existed.

    Args:
        img (ndarray): Clean float32 image in [0, 1] (BGR for a spec with JPEG).
        spec (str | dict | tuple): A CDD-11 category name, a spec mapping, or the output of :func:`parse_spec`.
        seed (int): Experiment seed. Default: 0.
        index (int): Sample index. Default: 0.
        depth (ndarray | None): Depth map for the haze renderers that take one (``scatter``, ``nonhomogeneous``;
            the empirical ``fog`` and ``glare`` have no depth) (None: synthetic). Default: None.
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
    clean = out = float_image(img, 'synthesize')
    drawn, parts = {}, [] if return_maps else None
    for name, kwargs in steps:
        fn = DEGRADATIONS[name]
        if 'renderer' in kwargs:
            kwargs = dict(kwargs)
            choice = kwargs.pop('renderer')
            if isinstance(choice, tuple):
                choice = choice[int(rng.integers(len(choice)))]
            fn = RENDERERS[name][choice]
            drawn[f'{name}.renderer'] = choice
        extra = {'depth': depth} if _takes_depth(fn) else {}
        if parts is not None:
            parts.append({})
            extra['maps'] = parts[-1]
        out, params = fn(out, rng, **kwargs, **extra)
        drawn.update({f'{name}.{k}': v for k, v in params.items()})
    if parts is None:
        return out, drawn
    return out, drawn, composite_maps(clean, out, parts)


def _broadcast(value, img):
    """A number, a per-channel vector or an ``H x W`` (``H x W x C``) map as a float32 array that broadcasts
    against ``img``."""
    value = np.asarray(value, np.float32)
    return expand(value, img) if value.ndim == 2 else value


def composite_maps(clean, degraded, parts):
    """Merge the maps of the steps of one composite and add the additive ``layer`` it implies.

    The maps (``H x W`` float32 unless said otherwise; each renderer's docstring lists what it fills):

    * ``illumination`` (``L``, where the model has one) and ``gain`` (``G``, ``H x W`` or ``H x W x C``): low
      light, ``J G`` being its noise-free output;
    * ``rain`` and ``snow``: how much rain (snow) covers each pixel: the additive streak layer, a screen layer, an
      opacity or a cover, per renderer; plus renderer-specific maps (``snow_cover``, ``snow_veil``, ``rain_mist``);
    * ``transmission`` (``t``, ``H x W``) and ``airlight`` (``A``: a float, C values or a map): haze; plus
      ``depth`` and ``haze_density`` where the renderer has them;
    * ``noise_sigma`` (float or map, [0, 1] scale): the std of the noise added, low light's and :func:`noise`'s
      combined as ``sqrt(s1^2 + s2^2)`` (before clipping, and before haze attenuates low light's);
    * ``blur_kernel`` (k x k) and ``jpeg_quality`` (float) when the spec has blur or JPEG;
    * ``layer`` (shape of the image): the additive layer ``R`` that makes
      ``D = (J G + R) t + A (1 - t)`` exact, i.e. ``R = (D - A (1 - t)) / t - J G`` with ``G = gain``,
      ``t = transmission``, ``A = airlight`` (1, 1 and 0 where the spec has no low light or haze). It holds the
      rain, the snow, the sensor noise, quantisation and clipping.

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
                value = np.hypot(maps[key], value)
                value = float(value) if np.ndim(value) == 0 else value.astype(np.float32)
            maps[key] = value
    base = clean * _broadcast(maps['gain'], clean) if 'gain' in maps else clean.copy()
    layer = degraded.astype(np.float32, copy=True)
    if 'transmission' in maps:
        t = _broadcast(maps['transmission'], clean)
        layer -= _broadcast(maps['airlight'], clean) * (1.0 - t)
        layer /= t
    layer -= base
    maps['layer'] = layer
    return maps
