"""Low-light formation models: ``D = J G + n`` with a gain ``G`` (a map, per channel where the model tints) and
sensor noise ``n`` of each model's kind.

* ``retinex``: the scene under a dimmer illumination, ``G = L^(gamma - 1)`` with ``L`` the smoothed max-channel
  map (Retinex, Land and McCann 1971); white Gaussian noise.
* ``camera``: a raw-camera exposure: the display image decoded to linear light, scaled by an exposure ``2^-ev``
  and per-channel white-balance gains, Poisson-Gaussian shot + read noise in linear light (Foi et al. 2008's
  heteroscedastic model), encoded back for display and quantised to 8 bits.
* ``iso``: a global tone curve ``k J^gamma`` per channel, with the noise of a high-ISO JPEG camera: spatially
  correlated luminance grain, blotchy chroma noise and row/column banding (fixed-pattern read-out offsets).
* ``spotlight``: non-uniform illumination, a dim ambient level plus a few smooth light pools, times a cos^4
  vignette; Poisson-Gaussian noise on the display scale.
"""
import cv2
import numpy as np

from interir_plugin.data.renderers._common import (
    channels,
    correlated_noise,
    draw,
    draw_params,
    expand,
    gaussian_field,
    integer,
    max_channel,
    real,
    register,
    scale_channels,
    setup,
)


@register('low_light', 'retinex', where='low_light', gamma=real(1.0), noise_sigma=real(0.0))
def retinex(img, rng=0, gamma=(2.0, 3.0), noise_sigma=(0.03, 0.08), smooth=0.05, maps=None):
    """Retinex low light: relight ``J * L^(gamma - 1)`` with ``L`` the smoothed max-channel map, plus noise.

    Retinex writes ``J = R * L``; the same scene under the dimmer illumination ``L^gamma`` is
    ``R * L^gamma = J * L^(gamma - 1)``, darkest where the scene is dark, as in real night shots.

    Args:
        img (ndarray): float32 image in [0, 1].
        rng (Generator | int): Random generator or seed. Default: 0.
        gamma (float | tuple): Illumination exponent (>= 1). Default: (2.0, 3.0).
        noise_sigma (float | tuple): Std of the additive Gaussian sensor noise (on the [0, 1] scale).
            Default: (0.03, 0.08).
        smooth (float): Std of the Gaussian that smooths the max-channel map, as a fraction of the shorter
            side. Default: 0.05.
        maps (dict | None): Filled with ``illumination`` (``L``, H x W), ``gain`` (``L^(gamma - 1)``, H x W, the
            factor the image was multiplied by) and ``noise_sigma`` (float). Default: None.

    Returns:
        tuple: (degraded float32 image, {'gamma', 'noise_sigma'}).
    """
    img, rng, maps = setup(img, rng, maps, 'low_light')
    p = draw_params(rng, retinex, gamma=gamma, noise_sigma=noise_sigma)
    g, sigma = p['gamma'], p['noise_sigma']
    h, w = img.shape[:2]
    light = max_channel(img)
    # smooth at 1/8 resolution: a wide Gaussian for the price of a small one
    small = cv2.resize(light, (max(1, w // 8), max(1, h // 8)), interpolation=cv2.INTER_AREA)
    small = cv2.GaussianBlur(small, (0, 0), max(0.5, smooth * min(h, w) / 8))
    light = cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)
    gain = cv2.pow(np.maximum(light, 1e-3), g - 1.0)
    out = cv2.multiply(img, expand(gain, img))
    out += gaussian_field(rng, img.shape, sigma)
    if maps is not None:
        maps.update(illumination=light, gain=gain, noise_sigma=sigma)
    return np.clip(out, 0.0, 1.0, out=out), {'gamma': g, 'noise_sigma': sigma}


@register('low_light', 'camera', ev=real(0.0), white_balance=real(0.0), shot=real(0.0), read=real(0.0))
def camera(img, rng=0, ev=(1.5, 4.0), white_balance=(0.75, 1.25), shot=(0.002, 0.02), read=(0.001, 0.006),
           maps=None):
    """A dark raw exposure: linear light scaled by ``2^-ev`` and white balance, Poisson-Gaussian noise, 8 bits.

    The display image is decoded to linear light with a 2.2 power (the approximation of the sRGB curve that
    Brooks et al. 2019 use to unprocess photos), ``x = 2^-ev w_c J^2.2``; the sensor reads
    ``y = x + sqrt(shot x + read^2) n`` (``n`` standard normal: the heteroscedastic approximation of Poisson shot
    noise plus Gaussian read noise, Foi et al. 2008), clipped to the full well [0, 1]; the camera encodes
    ``D = round(255 y^(1 / 2.2)) / 255``. The white-balance gains ``w_c`` are drawn per channel and scaled to mean
    1: a colour cast, not a brightness change. Noise is strongest, relative to the signal, in the shadows.

    Args:
        img (ndarray): float32 display image in [0, 1].
        rng (Generator | int): Random generator or seed. Default: 0.
        ev (float | tuple): Under-exposure in stops (exposure ``2^-ev``). Default: (1.5, 4.0).
        white_balance (float | tuple): Range of the per-channel gains before they are scaled to mean 1.
            Default: (0.75, 1.25).
        shot (float | tuple): Shot-noise variance per unit of linear signal (1 / full-well photons).
            Default: (0.002, 0.02).
        read (float | tuple): Read-noise std in linear light. Default: (0.001, 0.006).
        maps (dict | None): Filled with ``gain`` (H x W x C, the constant ``(2^-ev w_c)^(1 / 2.2)`` of each
            channel: ``J G`` is the exposure without noise and quantisation), ``noise_sigma`` (H x W x C: the noise
            std carried to the display scale to first order, the slope taken no nearer black than one std),
            ``exposure`` (float) and ``white_balance`` (C gains). Default: None.

    Returns:
        tuple: (degraded float32 image, {'ev', 'shot', 'read', 'white_balance_<c>'}).
    """
    img, rng, maps = setup(img, rng, maps, 'low_light.camera')
    p = draw_params(rng, camera, ev=ev, shot=shot, read=read)
    wb = np.array([draw(rng, white_balance, 'low_light.camera.white_balance', domain=camera.domains['white_balance'])
                   for _ in range(channels(img))], np.float32)
    wb /= max(float(wb.mean()), 1e-6)
    scale = np.float32(2.0 ** -p['ev']) * wb
    x = scale_channels(cv2.pow(img, 2.2), scale)
    sigma = cv2.sqrt(x * np.float32(p['shot']) + np.float32(p['read'] ** 2))
    y = gaussian_field(rng, img.shape, 1.0)
    y *= sigma
    y += x
    # floor at 1e-6, which encodes below half an 8-bit level, so it still rounds to 0 (cv2.pow is 4x slower on 0)
    out = cv2.pow(np.clip(y, 1e-6, 1.0, out=y), 1 / 2.2)
    out = np.round(out * np.float32(255.0)) * np.float32(1 / 255.0)
    if maps is not None:
        gain = scale ** np.float32(1 / 2.2)
        slope = cv2.pow(np.maximum(x, sigma), 1 / 2.2 - 1) * np.float32(1 / 2.2)
        maps.update(gain=np.broadcast_to(gain if img.ndim == 3 else gain[0], img.shape).astype(np.float32),
                    noise_sigma=slope * sigma, exposure=float(2.0 ** -p['ev']), white_balance=wb)
    p.update({f'white_balance_{c}': float(v) for c, v in enumerate(wb)})
    return out, p


@register('low_light', 'iso', exposure=real(0.0, 1.0), gamma=real(1.0), luma_noise=real(0.0),
          chroma_noise=real(0.0), grain=real(0.0), banding=real(0.0))
def iso(img, rng=0, exposure=(0.35, 0.7), gamma=(1.5, 2.2), luma_noise=(0.015, 0.05), chroma_noise=(0.01, 0.03),
        grain=(0.5, 1.5), banding=(0.003, 0.012), maps=None):
    """A global darkening tone curve with high-ISO camera noise: ``D = k J^gamma + n_luma + n_chroma + n_band``.

    The tone curve acts on every pixel and channel alone (no illumination map): dark pixels sink faster than
    bright ones and colours saturate. The noise is what a small sensor at high gain shows after demosaicing:
    luminance grain (one field for every channel) correlated over ``grain`` px, chroma noise (a field per channel)
    correlated over ``3 grain`` px, and banding, an offset per row plus a weaker one per column.

    Args:
        img (ndarray): float32 image in [0, 1].
        rng (Generator | int): Random generator or seed. Default: 0.
        exposure (float | tuple): ``k``, the gain of the tone curve. Default: (0.35, 0.7).
        gamma (float | tuple): Exponent of the tone curve (>= 1). Default: (1.5, 2.2).
        luma_noise (float | tuple): Std of the luminance grain. Default: (0.015, 0.05).
        chroma_noise (float | tuple): Std of the chroma noise. Default: (0.01, 0.03).
        grain (float | tuple): Correlation length of the grain, px. Default: (0.5, 1.5).
        banding (float | tuple): Std of the row offsets (columns: half of it). Default: (0.003, 0.012).
        maps (dict | None): Filled with ``gain`` (``k J^(gamma - 1)``, H x W x C) and ``noise_sigma`` (float: the
            std of the three noises together). Default: None.

    Returns:
        tuple: (degraded float32 image, {'exposure', 'gamma', 'luma_noise', 'chroma_noise', 'grain', 'banding'}).
    """
    img, rng, maps = setup(img, rng, maps, 'low_light.iso')
    p = draw_params(rng, iso, exposure=exposure, gamma=gamma, luma_noise=luma_noise, chroma_noise=chroma_noise,
                    grain=grain, banding=banding)
    h, w = img.shape[:2]
    gain = cv2.pow(np.maximum(img, np.float32(1e-6)), p['gamma'] - 1.0)  # cv2.pow is 4x slower on exact zeros
    gain *= np.float32(p['exposure'])
    out = cv2.multiply(img, gain)
    noise = correlated_noise(rng, (h, w), p['grain'])
    noise *= np.float32(p['luma_noise'])
    rows = rng.normal(0.0, p['banding'], (h, 1)).astype(np.float32)
    cols = rng.normal(0.0, p['banding'] / 2, (1, w)).astype(np.float32)
    noise += rows
    noise += cols
    chroma = correlated_noise(rng, img.shape, 3 * p['grain'])
    chroma *= np.float32(p['chroma_noise'])
    out += expand(noise, img)
    out += chroma
    if maps is not None:
        total = float(np.sqrt(p['luma_noise'] ** 2 + p['chroma_noise'] ** 2 + 1.25 * p['banding'] ** 2))
        maps.update(gain=gain, noise_sigma=total)
    return np.clip(out, 0.0, 1.0, out=out), p


@register('low_light', 'spotlight', ambient=real(0.0, 1.0), lights=integer(0), power=real(0.0), spread=real(0.0),
          vignette=real(0.0, 0.99), shot=real(0.0), read=real(0.0))
def spotlight(img, rng=0, ambient=(0.06, 0.18), lights=(1, 3), power=(0.3, 0.9), spread=(0.1, 0.35),
              vignette=(0.2, 0.6), shot=(0.002, 0.01), read=(0.01, 0.04), maps=None):
    """Non-uniform illumination: a dim ambient level and a few light pools, vignetted; Poisson-Gaussian noise.

    ``L = min(1, ambient + sum_i p_i exp(-|x - c_i|^2 / (2 s_i^2))) V`` with light centres ``c_i`` anywhere in
    the frame, widths ``s_i`` a fraction of the diagonal, and ``V = (1 + (r / f)^2)^-2`` the cos^4 fall-off of a
    lens whose corners keep ``1 - vignette`` of the light. ``D = J L + sqrt(read^2 + shot J L) n``.

    Args:
        img (ndarray): float32 image in [0, 1].
        rng (Generator | int): Random generator or seed. Default: 0.
        ambient (float | tuple): Illumination everywhere. Default: (0.06, 0.18).
        lights (int | tuple): Number of light pools. Default: (1, 3).
        power (float | tuple): Peak illumination of a pool (drawn per pool). Default: (0.3, 0.9).
        spread (float | tuple): Std of a pool, fraction of the image diagonal (drawn per pool).
            Default: (0.1, 0.35).
        vignette (float | tuple): Light lost in the corners (< 1). Default: (0.2, 0.6).
        shot (float | tuple): Shot-noise variance per unit of signal. Default: (0.002, 0.01).
        read (float | tuple): Read-noise std. Default: (0.01, 0.04).
        maps (dict | None): Filled with ``illumination`` and ``gain`` (both ``L``, H x W) and ``noise_sigma``
            (H x W x C, the std at each pixel). Default: None.

    Returns:
        tuple: (degraded float32 image, {'ambient', 'lights', 'vignette', 'shot', 'read'}).
    """
    img, rng, maps = setup(img, rng, maps, 'low_light.spotlight')
    p = draw_params(rng, spotlight, ambient=ambient, lights=lights, vignette=vignette, shot=shot, read=read)
    h, w = img.shape[:2]
    diag = float(np.hypot(h, w))
    ys = np.arange(h, dtype=np.float32)
    xs = np.arange(w, dtype=np.float32)
    light = np.full((h, w), p['ambient'], np.float32)
    for _ in range(p['lights']):
        peak = draw(rng, power, 'low_light.spotlight.power', domain=spotlight.domains['power'])
        s = diag * draw(rng, spread, 'low_light.spotlight.spread', domain=spotlight.domains['spread'])
        cy, cx = rng.uniform(0, h), rng.uniform(0, w)
        # a separable Gaussian: the outer product of a row and a column profile
        gy = np.exp(-0.5 * ((ys - cy) / max(s, 1e-3)) ** 2)
        gx = np.exp(-0.5 * ((xs - cx) / max(s, 1e-3)) ** 2)
        light += np.float32(peak) * np.outer(gy, gx).astype(np.float32)
    np.minimum(light, np.float32(1.0), out=light)
    # cos^4 law: V(r) = (1 + (r / f)^2)^-2, with f set by the corner's loss
    r2 = ((ys - (h - 1) / 2) ** 2)[:, None] + ((xs - (w - 1) / 2) ** 2)[None, :]
    f2 = (diag / 2) ** 2 / max((1.0 - p['vignette']) ** -0.5 - 1.0, 1e-6)
    light *= (1.0 / (1.0 + r2 / np.float32(f2)) ** 2).astype(np.float32)
    lit = cv2.multiply(img, expand(light, img))
    sigma = np.sqrt(lit * np.float32(p['shot']) + np.float32(p['read'] ** 2))
    out = lit + sigma * gaussian_field(rng, img.shape, 1.0)
    if maps is not None:
        maps.update(illumination=light, gain=light, noise_sigma=sigma)
    return np.clip(out, 0.0, 1.0, out=out), {k: float(v) for k, v in p.items()}
