"""Snow formation models. Each fills ``maps['snow']``: an ``H x W`` map in [0, 1] of how much of each pixel's light
comes from snow (the flake mask, the screen layer or the cover), which is what the audit's active set is scored on.

* ``flakes``: round, slightly smeared white flakes alpha-composited, ``D = J (1 - M) + M``.
* ``layers``: several depth layers of flakes (far: small, dense, sharp; near: large, sparse, motion-blurred and
  defocused into faint bokeh discs), screen-blended with a flake brightness, ``D = 1 - (1 - J)(1 - b S)``.
* ``accumulation``: snow lying on the scene: smooth, unsaturated surfaces, more towards the ground, turn white
  (with a little texture), plus a few falling flakes.
* ``blizzard``: wind-driven snow: long streaks at a steep angle over a white, gusty veil (a whiteout).
"""
import cv2
import numpy as np

from interir_plugin.data.renderers._common import (
    draw_params,
    expand,
    flake_mask,
    fractal_field,
    gaussian_field,
    integer,
    max_channel,
    mean_channel,
    min_channel,
    peak_gaussian,
    real,
    register,
    setup,
    streak_layer,
)


@register('snow', 'flakes', where='snow', density=real(0.0), size=real(0.05), fall=integer(0),
          angle=real(-90.0, 90.0), opacity=real(0.0, 1.0))
def flakes(img, rng=0, density=(0.003, 0.008), size=(0.5, 1.5), fall=(0, 6), angle=(-30.0, 30.0),
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
    img, rng, maps = setup(img, rng, maps, 'snow')
    p = draw_params(rng, flakes, density=density, size=size, fall=fall, angle=angle, opacity=opacity)
    h, w = img.shape[:2]
    mask = flake_mask(rng, (h, w), p['density'] * h * w, p['size'], p['fall'], p['angle'])
    mask = np.clip(mask * np.float32(p['opacity']), 0.0, 1.0)
    if maps is not None:
        maps['snow'] = mask
    mask = expand(mask, img)
    out = cv2.multiply(img, 1.0 - mask)
    out += mask
    return out, {k: float(v) for k, v in p.items()}


@register('snow', 'layers', planes=integer(1), density=real(0.0), size=real(0.05), fall=integer(0),
          angle=real(-90.0, 90.0), bokeh=real(0.0), brightness=real(0.0, 1.0))
def layers(img, rng=0, planes=(2, 4), density=(0.0001, 0.0005), size=(1.5, 3.0), fall=(4, 12),
           angle=(-35.0, 35.0), bokeh=(1.5, 4.0), brightness=(0.7, 0.95), maps=None):
    """Layered snow, screen-blended: ``D = 1 - (1 - J)(1 - b S)``, ``S = 1 - prod_k (1 - M_k)``.

    Layer ``k = 0, 1, ...`` is near to far: flakes ``1 / (k + 1)`` times as large and as smeared by motion as the
    nearest layer's, ``(k + 1)^2`` times as dense. The nearest layer is out of focus: its flakes spread into bokeh
    discs (a Gaussian of ``bokeh`` px), fainter as they grow; far layers fade with distance. Flakes reflect the
    ambient light at ``b`` of white.

    Args:
        img (ndarray): float32 image in [0, 1].
        rng (Generator | int): Random generator or seed. Default: 0.
        planes (int | tuple): Number of depth layers. Default: (2, 4).
        density (float | tuple): Flakes per pixel of the nearest layer. Default: (0.0001, 0.0005).
        size (float | tuple): Flake radius of the nearest layer, px. Default: (1.5, 3.0).
        fall (int | tuple): Motion smear of the nearest layer, px. Default: (4, 12).
        angle (float | tuple): Fall direction from vertical, degrees. Default: (-35, 35).
        bokeh (float | tuple): Defocus blur of the nearest layer, px. Default: (1.5, 4.0).
        brightness (float | tuple): ``b``. Default: (0.7, 0.95).
        maps (dict | None): Filled with ``snow`` (``b S``, H x W). Default: None.

    Returns:
        tuple: (degraded float32 image, {'planes', 'density', 'size', 'fall', 'angle', 'bokeh', 'brightness'}).
    """
    img, rng, maps = setup(img, rng, maps, 'snow.layers')
    p = draw_params(rng, layers, planes=planes, density=density, size=size, fall=fall, angle=angle, bokeh=bokeh,
                    brightness=brightness)
    h, w = img.shape[:2]
    keep = np.ones((h, w), np.float32)  # prod_k (1 - M_k)
    for k in range(p['planes']):
        scale = 1.0 / (k + 1)
        mask = flake_mask(rng, (h, w), p['density'] * (k + 1) ** 2 * h * w, max(0.4, p['size'] * scale),
                          int(round(p['fall'] * scale)), p['angle'] + rng.normal(0.0, 5.0))
        if k == 0 and p['bokeh'] > 0:
            # a defocused flake keeps its light but spreads it: a blob of std s blurred by b keeps s^2 / (s^2 + b^2)
            # of its peak; undo that, then show the discs at half a sharp core's opacity (faint bokeh)
            mask = cv2.GaussianBlur(mask, (0, 0), p['bokeh'])
            mask *= np.float32(0.5 * (1 + (p['bokeh'] / p['size']) ** 2))
        else:
            mask *= np.float32(1.0 - 0.5 * k / max(p['planes'], 1))  # far flakes fade into the air
        np.clip(mask, 0.0, 1.0, out=mask)
        keep *= 1.0 - mask
    snow = (1.0 - keep) * np.float32(p['brightness'])
    if maps is not None:
        maps['snow'] = snow
    out = 1.0 - img
    out *= expand(1.0 - snow, img)
    out *= np.float32(-1.0)
    out += np.float32(1.0)
    return out, {k: float(v) for k, v in p.items()}


@register('snow', 'accumulation', coverage=real(0.0, 1.0), softness=real(0.001), whiteness=real(0.0, 1.0),
          texture=real(0.0), density=real(0.0))
def accumulation(img, rng=0, coverage=(0.05, 0.2), softness=(0.03, 0.1), whiteness=(0.8, 0.95), texture=(0.02, 0.05),
                 density=(0.0005, 0.002), maps=None):
    """Lying snow: ``D = J (1 - C) + C W``, then a few flakes ``D (1 - M) + M``.

    Snow settles where a surface is smooth (low local gradient), unsaturated (not foliage or paint) and faces up;
    faces up is approximated by the height in the frame (the lower part is ground) and by a fractal drift field.
    The score ``(1 - gradient) (1 - saturation) (0.3 + 0.7 height) drift`` is thresholded at the quantile that
    leaves ``coverage`` of the frame covered, with soft edges ``softness`` wide. ``W`` is white at ``whiteness``
    with a little grain (``texture``).

    Args:
        img (ndarray): float32 image in [0, 1].
        rng (Generator | int): Random generator or seed. Default: 0.
        coverage (float | tuple): Share of the frame covered. Default: (0.05, 0.2).
        softness (float | tuple): Width of the cover's edges on the score scale. Default: (0.03, 0.1).
        whiteness (float | tuple): Brightness of the snow. Default: (0.8, 0.95).
        texture (float | tuple): Std of the snow's grain. Default: (0.02, 0.05).
        density (float | tuple): Falling flakes per pixel. Default: (0.0005, 0.002).
        maps (dict | None): Filled with ``snow`` (``1 - (1 - C)(1 - M)``, H x W) and ``snow_cover`` (``C``).
            Default: None.

    Returns:
        tuple: (degraded float32 image, {'coverage', 'softness', 'whiteness', 'texture', 'density'}).
    """
    img, rng, maps = setup(img, rng, maps, 'snow.accumulation')
    p = draw_params(rng, accumulation, coverage=coverage, softness=softness, whiteness=whiteness, texture=texture,
                    density=density)
    h, w = img.shape[:2]
    # the cover is smooth: score it at half resolution and upsample
    hs, ws = max(1, h // 2), max(1, w // 2)
    small = cv2.resize(img, (ws, hs), interpolation=cv2.INTER_AREA).reshape((hs, ws, *img.shape[2:]))
    grey = mean_channel(small)
    grad = cv2.magnitude(cv2.Sobel(grey, cv2.CV_32F, 1, 0, ksize=3), cv2.Sobel(grey, cv2.CV_32F, 0, 1, ksize=3))
    grad = cv2.GaussianBlur(grad, (0, 0), max(0.5, 0.005 * min(h, w)))
    grad *= np.float32(1.0 / max(float(np.percentile(grad, 95)), 1e-3))  # texture relative to the image's own
    saturation = max_channel(small) - min_channel(small)
    score = np.clip(1.0 - grad, 0.0, 1.0)
    score *= 1.0 - saturation
    score *= np.linspace(0.3, 1.0, hs, dtype=np.float32)[:, None]  # the ground is low in the frame
    score *= 0.4 + 0.6 * fractal_field(rng, (hs, ws), 0.5)  # drifts
    threshold = float(np.quantile(score, 1.0 - p['coverage']))
    cover = np.clip((score - np.float32(threshold)) * np.float32(1.0 / p['softness']) + np.float32(0.5), 0.0, 1.0)
    cover = cv2.resize(cover, (w, h), interpolation=cv2.INTER_LINEAR)
    # the snow's grain: white noise at half resolution, smoothed by the upsampling
    snow_colour = cv2.resize(gaussian_field(rng, (hs, ws), p['texture']), (w, h), interpolation=cv2.INTER_LINEAR)
    snow_colour += np.float32(p['whiteness'])
    np.clip(snow_colour, 0.0, 1.0, out=snow_colour)
    flake = np.clip(flake_mask(rng, (h, w), p['density'] * h * w, 1.0, 2, rng.uniform(-20.0, 20.0)), 0.0, 1.0)
    if maps is not None:
        maps.update(snow=1.0 - (1.0 - cover) * (1.0 - flake), snow_cover=cover)
    # D = J (1 - C) + C W, then the flakes D (1 - M) + M: together J a + b with the single-channel maps
    # a = (1 - C)(1 - M), b = C W (1 - M) + M
    through = 1.0 - flake
    b = cover * snow_colour
    b *= through
    b += flake
    through *= 1.0 - cover
    out = cv2.multiply(img, expand(through, img))
    out += expand(b, img)
    return out.astype(np.float32, copy=False), {k: float(v) for k, v in p.items()}


@register('snow', 'blizzard', density=real(0.0), size=real(0.05), length=integer(1), angle=real(0.0, 90.0),
          opacity=real(0.0, 1.0), veil=real(0.0, 1.0), gusts=real(0.0, 1.0))
def blizzard(img, rng=0, density=(0.0015, 0.004), size=(0.5, 1.2), length=(12, 35), angle=(40.0, 75.0),
             opacity=(0.4, 0.8), veil=(0.05, 0.2), gusts=(0.3, 0.7), maps=None):
    """Wind-driven snow: ``D = (J (1 - V) + V) (1 - M) + M``, long flake streaks over a gusty white veil.

    ``M`` is ``opacity`` times flakes of std ``size`` px smeared ``length`` px at ``angle`` degrees from vertical,
    to the left or right (drawn); ``V = veil (1 - gusts + gusts G)`` with ``G`` a fractal field: the whiteout of
    snow in the air, thicker in gusts.

    Args:
        img (ndarray): float32 image in [0, 1].
        rng (Generator | int): Random generator or seed. Default: 0.
        density (float | tuple): Flakes per pixel. Default: (0.0015, 0.004).
        size (float | tuple): Flake std, px. Default: (0.5, 1.2).
        length (int | tuple): Streak length, px. Default: (12, 35).
        angle (float | tuple): Angle from vertical (the side is drawn), degrees. Default: (40, 75).
        opacity (float | tuple): Opacity of a streak's core. Default: (0.4, 0.8).
        veil (float | tuple): Strength of the white veil. Default: (0.05, 0.2).
        gusts (float | tuple): Relative variation of the veil. Default: (0.3, 0.7).
        maps (dict | None): Filled with ``snow`` (``M``, H x W) and ``snow_veil`` (``V``, H x W). Default: None.

    Returns:
        tuple: (degraded float32 image, {'density', 'size', 'length', 'angle', 'opacity', 'veil', 'gusts'}), the
        angle signed.
    """
    img, rng, maps = setup(img, rng, maps, 'snow.blizzard')
    p = draw_params(rng, blizzard, density=density, size=size, length=length, angle=angle, opacity=opacity,
                    veil=veil, gusts=gusts)
    p['angle'] *= 1.0 if rng.random() < 0.5 else -1.0
    h, w = img.shape[:2]
    mask = streak_layer(rng, (h, w), p['density'] * h * w, p['length'], p['angle'], p['size'])
    mask = cv2.sepFilter2D(mask, -1, np.ones(1, np.float32), peak_gaussian(p['size']), borderType=cv2.BORDER_CONSTANT)
    mask *= np.float32(p['opacity'])
    np.clip(mask, 0.0, 1.0, out=mask)
    veil_map = fractal_field(rng, (h, w), 0.5, base=2, octaves=4)
    veil_map *= np.float32(p['veil'] * p['gusts'])
    veil_map += np.float32(p['veil'] * (1 - p['gusts']))
    if maps is not None:
        maps.update(snow=mask, snow_veil=veil_map)
    v = expand(veil_map, img)
    out = img + v * (1.0 - img)
    m = expand(mask, img)
    out += m * (1.0 - out)
    return out.astype(np.float32, copy=False), {k: float(v) for k, v in p.items()}
