"""Haze formation models, each written as ``D = J t + A (1 - t)`` with its own transmission ``t`` and airlight ``A``
(a number, a colour, or a map where the model has one), so every model's maps fit the one composite equation.

* ``scatter``: homogeneous atmospheric scattering (Koschmieder's law, McCartney 1976; Narasimhan and Nayar 2002):
  ``t = exp(-beta d)`` on a synthetic ground-plane depth, a grey airlight.
* ``nonhomogeneous``: scattering whose density varies in space (a fractal density field times a tilted-plane
  depth with fractal relief), with a tinted airlight: ``t = exp(-beta rho(x) d(x))``.
* ``fog``: an empirical fog: the image's contrast compressed by ``1 / (1 + a)`` and a fractal fog field added,
  ``D = (J + a F) / (1 + a)``: a uniform transmission and a patchy airlight ``F``, independent of depth.
* ``glare``: veiling glare (stray light in the lens, Talvala et al. 2007): the image plus a fraction of itself
  spread by a wide point-spread function, and the halo of a bright source: a uniform transmission and an airlight
  map made of the scene's own light.
"""
import cv2
import numpy as np

from interir_plugin.data.renderers._common import (
    as_rng,
    channels,
    draw,
    draw_params,
    expand,
    fractal_field,
    real,
    register,
    scale_channels,
    setup,
    smooth,
)


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
    rng = as_rng(rng)
    hz, rough = draw(rng, horizon, 'depth.horizon'), draw(rng, roughness, 'depth.roughness')
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


def _given_depth(depth, shape, name):
    d = np.asarray(depth, np.float32).reshape(np.shape(depth)[:2])
    if d.shape != shape:
        raise ValueError(f'{name}: depth map {d.shape} does not match the image {shape}')
    return np.clip(d, 0.0, 1.0)  # already normalised over the whole image: a crop keeps its depth range


@register('haze', 'scatter', where='haze', beta=real(0.0), airlight=real(0.0, 1.0))
def scatter(img, rng=0, beta=(1.0, 2.0), airlight=(0.6, 1.0), depth=None, maps=None):
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
    img, rng, maps = setup(img, rng, maps, 'haze')
    p = draw_params(rng, scatter, beta=beta, airlight=airlight)
    h, w = img.shape[:2]
    if depth is None:
        d, extra = synthetic_depth(rng, (h, w))
        p.update({f'depth_{k}': v for k, v in extra.items()})
    else:
        d = _given_depth(depth, (h, w), 'haze')
    t = cv2.exp(d * np.float32(-p['beta']))
    if maps is not None:
        maps.update(transmission=t, airlight=p['airlight'])
    t = expand(t, img)
    a = np.float32(p['airlight'])
    out = cv2.multiply(img - a, t)
    out += a
    return out, p


@register('haze', 'nonhomogeneous', beta=real(0.0), patchiness=real(0.0, 1.0), airlight=real(0.0, 1.0),
          tint=real(0.0, 1.0), tilt=real(-90.0, 90.0), relief=real(0.0, 1.0))
def nonhomogeneous(img, rng=0, beta=(1.0, 2.5), patchiness=(0.4, 0.9), airlight=(0.7, 1.0), tint=(0.0, 0.1),
                   tilt=(-60.0, 60.0), relief=(0.2, 0.5), depth=None, maps=None):
    """Non-homogeneous scattering: ``t = exp(-beta rho d)`` with a patchy density ``rho`` and a tinted airlight.

    The depth ``d`` is a plane rising towards a random direction (``tilt`` degrees from straight up) mixed with a
    fractal relief of weight ``relief``; the density ``rho = 1 + patchiness (2 F - 1)`` follows an independent
    fractal field ``F`` (haze banks, smoke); ``A_c = airlight (1 + tint u_c)``, ``u_c`` uniform in [-1, 1] per
    channel (bluish or yellowish haze), clipped to 1.

    Args:
        img (ndarray): float32 image in [0, 1].
        rng (Generator | int): Random generator or seed. Default: 0.
        beta (float | tuple): Mean scattering coefficient on normalised depth. Default: (1.0, 2.5).
        patchiness (float | tuple): Relative variation of the density. Default: (0.4, 0.9).
        airlight (float | tuple): Brightness of the airlight. Default: (0.7, 1.0).
        tint (float | tuple): Relative colour spread of the airlight. Default: (0.0, 0.1).
        tilt (float | tuple): Direction in which depth grows, degrees from up. Default: (-60, 60).
        relief (float | tuple): Weight of the fractal relief in the depth. Default: (0.2, 0.5).
        depth (ndarray | None): A depth map normalised to [0, 1] (1 = far) used instead of the synthetic one.
            Default: None.
        maps (dict | None): Filled with ``transmission`` (H x W), ``airlight`` (C values), ``depth`` and
            ``haze_density`` (``rho``, H x W). Default: None.

    Returns:
        tuple: (degraded float32 image, {'beta', 'patchiness', 'airlight', 'tint', 'tilt', 'relief'}).
    """
    img, rng, maps = setup(img, rng, maps, 'haze.nonhomogeneous')
    p = draw_params(rng, nonhomogeneous, beta=beta, patchiness=patchiness, airlight=airlight, tint=tint, tilt=tilt,
                    relief=relief)
    h, w = img.shape[:2]
    # the synthetic depth and the density are smooth: make them, and t, at 1/4 resolution and upsample t
    hs, ws = (max(2, h // 4), max(2, w // 4)) if depth is None else (h, w)
    if depth is None:
        theta = np.deg2rad(p['tilt'])
        ys = np.linspace(1.0, 0.0, hs, dtype=np.float32)[:, None]  # up is +y: the top row is far for tilt 0
        xs = np.linspace(0.0, 1.0, ws, dtype=np.float32)[None, :]
        plane = np.float32(np.cos(theta)) * ys + np.float32(np.sin(theta)) * xs
        d = plane * np.float32(1 - p['relief']) + fractal_field(rng, (hs, ws), 0.55) * np.float32(p['relief'])
        low, high = cv2.minMaxLoc(d)[:2]
        d = (d - np.float32(low)) * np.float32(1.0 / max(high - low, 1e-6))
    else:
        d = _given_depth(depth, (h, w), 'haze.nonhomogeneous')
    rho = fractal_field(rng, (hs, ws), 0.5)
    rho *= np.float32(2 * p['patchiness'])
    rho += np.float32(1 - p['patchiness'])
    t = cv2.exp(cv2.multiply(rho, d) * np.float32(-p['beta']))
    if (hs, ws) != (h, w):
        t, d, rho = (cv2.resize(m, (w, h), interpolation=cv2.INTER_LINEAR) for m in (t, d, rho))
    u = rng.uniform(-1.0, 1.0, channels(img))
    a = np.clip(p['airlight'] * (1.0 + p['tint'] * u), 0.0, 1.0).astype(np.float32)
    if maps is not None:
        maps.update(transmission=t, airlight=a, depth=d, haze_density=rho)
    # (J - A) t + A = J t + A (1 - t), with A per channel
    out = cv2.multiply(img, expand(t, img))
    out += scale_channels(expand(1.0 - t, img), a)
    return out, p


@register('haze', 'fog', thickness=real(0.0), brightness=real(0.0, 1.0), contrast=real(0.0, 1.0),
          roughness=real(0.0, 1.0))
def fog(img, rng=0, thickness=(0.8, 2.0), brightness=(0.7, 1.0), contrast=(0.3, 0.7), roughness=(0.4, 0.7),
        maps=None):
    """Empirical fog: contrast compressed and a fractal fog field added, ``D = (J + a F) / (1 + a)``.

    ``F = brightness (1 - contrast + contrast P)`` with ``P`` a fractal field in [0, 1] whose octaves fall off by
    ``roughness``: fog banks of every size, bright where thick. The transmission ``1 / (1 + a)`` is the same
    everywhere (no depth), the airlight is the field ``F``.

    Args:
        img (ndarray): float32 image in [0, 1].
        rng (Generator | int): Random generator or seed. Default: 0.
        thickness (float | tuple): ``a``, the weight of the fog against the scene. Default: (0.8, 2.0).
        brightness (float | tuple): Brightness of the densest fog. Default: (0.7, 1.0).
        contrast (float | tuple): Relative variation of the fog field. Default: (0.3, 0.7).
        roughness (float | tuple): Amplitude ratio of successive octaves of the field. Default: (0.4, 0.7).
        maps (dict | None): Filled with ``transmission`` (H x W, constant) and ``airlight`` (the fog field ``F``,
            H x W). Default: None.

    Returns:
        tuple: (degraded float32 image, {'thickness', 'brightness', 'contrast', 'roughness'}).
    """
    img, rng, maps = setup(img, rng, maps, 'haze.fog')
    p = draw_params(rng, fog, thickness=thickness, brightness=brightness, contrast=contrast, roughness=roughness)
    h, w = img.shape[:2]
    field = fractal_field(rng, (h, w), p['roughness'], base=2, octaves=6)
    field *= np.float32(p['brightness'] * p['contrast'])
    field += np.float32(p['brightness'] * (1 - p['contrast']))
    t = np.float32(1.0 / (1.0 + p['thickness']))
    if maps is not None:
        maps.update(transmission=np.full((h, w), t, np.float32), airlight=field)
    out = img * t
    out += expand(field * (1 - t), img)
    return out, p


@register('haze', 'glare', veil=real(0.0, 0.95), spread=real(0.0), glow=real(0.0), halo=real(0.0, 1.0),
          halo_size=real(0.0))
def glare(img, rng=0, veil=(0.4, 0.75), spread=(0.05, 0.2), glow=(1.0, 1.6), halo=(0.3, 0.9), halo_size=(0.3, 0.8),
          maps=None):
    """Veiling glare: ``D = (1 - g) J + g S``, ``S = min(1, glow K * J + halo)``: the lens spreads a share ``g`` of
    the light over the frame.

    ``K`` is a wide point-spread function (a Gaussian of std ``spread`` x the diagonal, applied at low
    resolution); ``glow`` > 1 is the extra light of bright out-of-frame areas; ``halo`` is the smooth glow of a
    bright source (a Gaussian of std ``halo_size`` x the diagonal centred anywhere up to half a frame outside).
    Contrast falls everywhere alike and bright regions bloom into their neighbours: transmission ``1 - g``,
    airlight ``S``, a coloured map made of the scene's own light.

    Args:
        img (ndarray): float32 image in [0, 1].
        rng (Generator | int): Random generator or seed. Default: 0.
        veil (float | tuple): ``g``, the share of scattered light (< 1). Default: (0.4, 0.75).
        spread (float | tuple): Width of the PSF, fraction of the diagonal. Default: (0.05, 0.2).
        glow (float | tuple): Gain of the spread light. Default: (1.0, 1.6).
        halo (float | tuple): Peak of the source's halo. Default: (0.3, 0.9).
        halo_size (float | tuple): Width of the halo, fraction of the diagonal. Default: (0.3, 0.8).
        maps (dict | None): Filled with ``transmission`` (H x W, constant ``1 - g``) and ``airlight`` (``S``,
            the image's shape). Default: None.

    Returns:
        tuple: (degraded float32 image, {'veil', 'spread', 'glow', 'halo', 'halo_size'}).
    """
    img, rng, maps = setup(img, rng, maps, 'haze.glare')
    p = draw_params(rng, glare, veil=veil, spread=spread, glow=glow, halo=halo, halo_size=halo_size)
    h, w = img.shape[:2]
    diag = float(np.hypot(h, w))
    spread_light = smooth(img, p['spread'] * diag, factor=8)
    cy, cx = rng.uniform(-0.5 * h, 1.5 * h), rng.uniform(-0.5 * w, 1.5 * w)
    s = max(p['halo_size'] * diag, 1e-3)
    gy = np.exp(-0.5 * ((np.arange(h) - cy) / s) ** 2)
    gx = np.exp(-0.5 * ((np.arange(w) - cx) / s) ** 2)
    source = (p['halo'] * np.outer(gy, gx)).astype(np.float32)
    spread_light *= np.float32(p['glow'])
    spread_light += expand(source, img)
    np.minimum(spread_light, np.float32(1.0), out=spread_light)
    t = np.float32(1.0 - p['veil'])
    if maps is not None:
        maps.update(transmission=np.full((h, w), t, np.float32), airlight=spread_light.copy())
    out = img * t
    spread_light *= np.float32(p['veil'])
    out += spread_light
    return out, p
