"""Rain formation models. Each fills ``maps['rain']``: an ``H x W`` map of how much rain covers each pixel (the
additive layer, the screen layer or the opacity, per model), which is what the audit's active set is scored on.

* ``streaks``: additive streaks, ``D = clip(J + S)`` (the common synthetic rain of Rain100L-style sets).
* ``screen``: several depth layers of streaks (near: long, wide, defocused, sparse; far: short, thin, dense,
  faint) screen-blended, ``D = 1 - (1 - J)(1 - R)``, plus a light rain mist.
* ``occluding``: streaks as semi-transparent drops that occlude the scene and show it refracted (a drop images a
  wide field of view, blurred and brightened: Garg and Nayar 2007), ``D = J (1 - alpha) + alpha C``, with splashes
  on the lower part of the frame.
* ``drops``: raindrops on the lens or windscreen: each drop is a small inverted, minified lens image of the scene
  around it, out of focus, darker at its rim (after Roser and Geiger 2009; Qian et al. 2018's raindrop data).
"""
import cv2
import numpy as np

from interir_plugin.data.renderers._common import (
    check_param,
    draw_params,
    expand,
    integer,
    peak_gaussian,
    real,
    register,
    setup,
    smooth,
    streak_layer,
)


@register('rain', 'streaks', where='rain', density=real(0.0), length=integer(1), angle=real(-90.0, 90.0),
          width=real(0.0), intensity=real(0.0))
def streaks(img, rng=0, density=(0.002, 0.008), length=(10, 30), angle=(-25.0, 25.0), width=(0.5, 1.2),
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
    img, rng, maps = setup(img, rng, maps, 'rain')
    p = draw_params(rng, streaks, density=density, length=length, angle=angle, width=width, intensity=intensity)
    h, w = img.shape[:2]
    layer = streak_layer(rng, (h, w), p['density'] * h * w, max(1, p['length']), p['angle'], p['width'])
    layer *= np.float32(p['intensity'])
    if maps is not None:
        maps['rain'] = layer
    out = img + expand(layer, img)
    return np.clip(out, 0.0, 1.0, out=out), {k: float(v) for k, v in p.items()}


@register('rain', 'screen', planes=integer(1), density=real(0.0), length=integer(1), angle=real(-90.0, 90.0),
          width=real(0.0), intensity=real(0.0, 1.0), defocus=real(0.0), mist=real(0.0, 1.0))
def screen(img, rng=0, planes=(2, 4), density=(0.001, 0.003), length=(20, 50), angle=(-30.0, 30.0),
           width=(0.6, 1.5), intensity=(0.3, 0.7), defocus=(0.5, 2.0), mist=(0.0, 0.15), maps=None):
    """Layered rain, screen-blended: ``D = (1 - (1 - J)(1 - R)) (1 - m) + m``.

    Layer ``k = 0, 1, ...`` (near to far) is ``1 / (k + 1)`` times as long, wide and bright (at least 0.3) as the
    nearest, ``(k + 1)`` times as dense, and tilted by a few degrees of wind jitter; the nearest is out of focus
    (a Gaussian blur of ``defocus`` px). The layers combine as screens, ``R = 1 - prod_k (1 - I_k S_k)``, and a
    rain mist of strength ``m`` lightens the result.

    Args:
        img (ndarray): float32 image in [0, 1].
        rng (Generator | int): Random generator or seed. Default: 0.
        planes (int | tuple): Number of depth layers. Default: (2, 4).
        density (float | tuple): Streaks per pixel of the nearest layer. Default: (0.001, 0.003).
        length (int | tuple): Streak length of the nearest layer, px. Default: (20, 50).
        angle (float | tuple): Mean streak angle from vertical, degrees. Default: (-30, 30).
        width (float | tuple): Cross-section std of the nearest layer, px. Default: (0.6, 1.5).
        intensity (float | tuple): Peak of the nearest layer's screen. Default: (0.3, 0.7).
        defocus (float | tuple): Blur of the nearest layer, px. Default: (0.5, 2.0).
        mist (float | tuple): Strength of the rain mist. Default: (0.0, 0.15).
        maps (dict | None): Filled with ``rain`` (the screen layer ``R``, H x W) and ``rain_mist`` (float).
            Default: None.

    Returns:
        tuple: (degraded float32 image, {'planes', 'density', 'length', 'angle', 'width', 'intensity', 'defocus',
        'mist'}).
    """
    img, rng, maps = setup(img, rng, maps, 'rain.screen')
    p = draw_params(rng, screen, planes=planes, density=density, length=length, angle=angle, width=width,
                    intensity=intensity, defocus=defocus, mist=mist)
    h, w = img.shape[:2]
    keep = np.ones((h, w), np.float32)  # prod_k (1 - I_k S_k): what the screens let through
    for k in range(p['planes']):
        scale = 1.0 / (k + 1)
        layer = streak_layer(rng, (h, w), p['density'] * (k + 1) * h * w, max(1, round(p['length'] * scale)),
                             p['angle'] + rng.normal(0.0, 3.0), p['width'] * scale)
        if k == 0 and p['defocus'] > 0:
            peak = float(layer.max())
            layer = cv2.GaussianBlur(layer, (0, 0), p['defocus'])
            # a defocused streak spreads its light: keep the layer's brightest point where it was
            layer *= np.float32(peak / max(float(layer.max()), 1e-6))
        layer *= np.float32(-p['intensity'] * max(scale, 0.3))
        layer += np.float32(1.0)
        np.clip(layer, 0.0, 1.0, out=layer)
        keep *= layer
    rain = 1.0 - keep
    if maps is not None:
        maps.update(rain=rain, rain_mist=p['mist'])
    # 1 - (1 - J)(1 - R) = J + R (1 - J), then the mist: D (1 - m) + m
    out = 1.0 - img
    out *= expand(keep, img)
    out *= np.float32(-(1.0 - p['mist']))
    out += np.float32(1.0)
    return out, {k: float(v) for k, v in p.items()}


@register('rain', 'occluding', density=real(0.0), length=integer(1), angle=real(-90.0, 90.0), width=real(0.0),
          opacity=real(0.0, 1.0), blur=real(0.0), brightness=real(0.0, 1.0), splashes=real(0.0))
def occluding(img, rng=0, density=(0.003, 0.008), length=(15, 45), angle=(-20.0, 20.0), width=(0.8, 2.0),
              opacity=(0.6, 0.95), blur=(3.0, 8.0), brightness=(0.15, 0.4), splashes=(0.0, 0.002), maps=None):
    """Occluding, refracting streaks: ``D = J (1 - alpha) + alpha C``.

    ``alpha`` is a streak layer times ``opacity``; ``C = (1 - b) blur(J) + b`` is what a drop shows: the scene
    over a wide field of view, blurred (``blur`` px) and brightened towards white by ``b``. So a streak is bright
    over a dark scene and can be darker than a bright one, unlike additive rain. Splashes are small flat blobs
    (drops bursting on the ground) in the lower 40 % of the frame, ``splashes`` per pixel there.

    Args:
        img (ndarray): float32 image in [0, 1].
        rng (Generator | int): Random generator or seed. Default: 0.
        density (float | tuple): Streaks per pixel. Default: (0.003, 0.008).
        length (int | tuple): Streak length, px. Default: (15, 45).
        angle (float | tuple): Streak angle from vertical, degrees. Default: (-20, 20).
        width (float | tuple): Streak cross-section std, px. Default: (0.8, 2.0).
        opacity (float | tuple): Opacity of a streak's core. Default: (0.6, 0.95).
        blur (float | tuple): Blur of the refracted scene, px. Default: (3.0, 8.0).
        brightness (float | tuple): ``b``, the brightening of the refracted scene. Default: (0.15, 0.4).
        splashes (float | tuple): Splashes per pixel in the lower part of the frame. Default: (0.0, 0.002).
        maps (dict | None): Filled with ``rain`` (``alpha``, H x W, streaks and splashes). Default: None.

    Returns:
        tuple: (degraded float32 image, {'density', 'length', 'angle', 'width', 'opacity', 'blur', 'brightness',
        'splashes'}).
    """
    img, rng, maps = setup(img, rng, maps, 'rain.occluding')
    p = draw_params(rng, occluding, density=density, length=length, angle=angle, width=width, opacity=opacity,
                    blur=blur, brightness=brightness, splashes=splashes)
    h, w = img.shape[:2]
    alpha = streak_layer(rng, (h, w), p['density'] * h * w, p['length'], p['angle'], p['width'])
    top = int(0.6 * h)
    n = int(rng.poisson(p['splashes'] * (h - top) * w))
    if n and h - top > 0:
        spots = np.zeros((h, w), np.float32)
        spots[rng.integers(top, h, n), rng.integers(0, w, n)] = rng.uniform(0.6, 1.0, n).astype(np.float32)
        # a splash is a flat crown: wider than tall
        spots = cv2.sepFilter2D(spots, -1, peak_gaussian(2.0), peak_gaussian(0.8), borderType=cv2.BORDER_CONSTANT)
        np.maximum(alpha, spots, out=alpha)
    alpha *= np.float32(p['opacity'])
    np.clip(alpha, 0.0, 1.0, out=alpha)
    refracted = smooth(img, p['blur'], factor=2)
    refracted *= np.float32(1 - p['brightness'])
    refracted += np.float32(p['brightness'])
    if maps is not None:
        maps['rain'] = alpha
    a = expand(alpha, img)
    out = img + a * (refracted - img)
    return out, {k: float(v) for k, v in p.items()}


@register('rain', 'drops', coverage=real(0.0, 1.0), radius=real(0.0), elongation=real(1.0), power=real(0.0),
          defocus=real(0.0), rim=real(0.0, 1.0))
def drops(img, rng=0, coverage=(0.1, 0.35), radius=(0.03, 0.09), elongation=(1.0, 1.6), power=(0.3, 0.7),
          defocus=(0.8, 2.5), rim=(0.1, 0.4), maps=None):
    """Raindrops on the lens: ``D = J (1 - M) + M Q``, each drop a tiny lens showing the scene inverted.

    Drops are ellipses (radius ``r`` x the shorter side, ``elongation`` times taller than wide) drawn until they
    cover about ``coverage`` of the frame (later drops in front). Inside a drop of centre ``c`` and semi-axes
    ``(a, b)`` the pixel at ``c + (a u, b v)`` shows the scene at ``c - power (a u, b v) - (0, b)``: inverted and
    minified (a convex water lens), looking a little upwards. The drop image ``Q`` is out of focus (a Gaussian of
    ``defocus`` px), darker towards the rim (``1 - rim (u^2 + v^2)^2``, light leaving the drop's edge); the drop
    mask ``M`` has soft, defocused edges.

    Args:
        img (ndarray): float32 image in [0, 1].
        rng (Generator | int): Random generator or seed. Default: 0.
        coverage (float | tuple): Share of the frame the drops cover (before overlaps). Default: (0.1, 0.35).
        radius (float | tuple): Drop radius, fraction of the shorter side (drawn per drop). Default: (0.03, 0.09).
        elongation (float | tuple): Height over width of a drop (drawn per drop). Default: (1.0, 1.6).
        power (float | tuple): Minification of the inverted image. Default: (0.3, 0.7).
        defocus (float | tuple): Blur of the drops, px. Default: (0.8, 2.5).
        rim (float | tuple): Darkening at a drop's rim. Default: (0.1, 0.4).
        maps (dict | None): Filled with ``rain`` (``M``, H x W). Default: None.

    Returns:
        tuple: (degraded float32 image, {'coverage', 'power', 'defocus', 'rim', 'drops'}).
    """
    img, rng, maps = setup(img, rng, maps, 'rain.drops')
    p = draw_params(rng, drops, coverage=coverage, power=power, defocus=defocus, rim=rim)
    h, w = img.shape[:2]
    side = min(h, w)
    # radius and elongation are drawn per drop, all at once below
    lo_r, hi_r = check_param(radius, 'rain.drops.radius', drops.domains['radius'])
    lo_e, hi_e = check_param(elongation, 'rain.drops.elongation', drops.domains['elongation'])
    mean_area = np.pi * (side * (lo_r + hi_r) / 2) ** 2 * (lo_e + hi_e) / 2
    count = int(min(400, round(p['coverage'] * h * w / max(mean_area, 1.0))))
    ids = np.zeros((h, w), np.int32)  # index + 1 of the drop in front at each pixel, 0 for none
    cx, cy = rng.uniform(0, w, count), rng.uniform(0, h, count)
    ax = side * rng.uniform(lo_r, hi_r, count)
    by = ax * rng.uniform(lo_e, hi_e, count)
    for i in range(count):
        cv2.ellipse(ids, (int(round(cx[i])), int(round(cy[i]))), (max(1, int(round(ax[i]))), max(1, int(round(by[i])))),
                    0, 0, 360, i + 1, -1)
    inside = ids > 0
    k = ids[inside] - 1
    yy, xx = np.nonzero(inside)
    u = (xx - cx[k]) / ax[k]
    v = (yy - cy[k]) / by[k]
    map_x = np.tile(np.arange(w, dtype=np.float32), (h, 1))
    map_y = np.tile(np.arange(h, dtype=np.float32)[:, None], (1, w))
    map_x[inside] = (cx[k] - p['power'] * ax[k] * u).astype(np.float32)
    map_y[inside] = (cy[k] - p['power'] * by[k] * v - by[k]).astype(np.float32)
    seen = cv2.remap(img, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
    shade = np.ones((h, w), np.float32)
    shade[inside] = (1.0 - p['rim'] * np.minimum(u * u + v * v, 1.0) ** 2).astype(np.float32)
    mask = inside.astype(np.float32)
    if p['defocus'] > 0:
        seen = cv2.GaussianBlur(seen, (0, 0), p['defocus'])
        mask = cv2.GaussianBlur(mask, (0, 0), p['defocus'] / 2)
        shade = cv2.GaussianBlur(shade, (0, 0), p['defocus'] / 2)
    seen *= expand(shade, img)
    if maps is not None:
        maps['rain'] = mask
    out = img + expand(mask, img) * (seen - img)
    p['drops'] = count
    return out, {k: float(v) for k, v in p.items()}
