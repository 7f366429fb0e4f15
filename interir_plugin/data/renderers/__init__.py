"""Several independent formation models ("renderers") per degradation component, so a network can be trained on
some and tested on others (issue 22's leave-one-renderer-out protocol, ``datasets_meta/minicdd_loro.yml``).

One module per component (:mod:`~interir_plugin.data.renderers.low_light`, ``rain``, ``snow``, ``haze``), each
renderer a function ``f(img, rng=0, **params, maps=None) -> (degraded, drawn)`` like every degradation of
:mod:`interir_plugin.data.degradations`, registered in :data:`RENDERERS` under its model's name. The first of each
component (``retinex``, ``streaks``, ``flakes``, ``scatter``) is the synthesiser's original model: a spec without
``renderer`` uses it with the same draws as before. docs/data.md names every model with its formula and maps.
"""
from interir_plugin.data.renderers import haze, low_light, rain, snow  # noqa: F401  (registers the renderers)
from interir_plugin.data.renderers._common import COMPONENTS, DEFAULT_RENDERERS, RENDERERS

__all__ = ['COMPONENTS', 'DEFAULT_RENDERERS', 'RENDERERS', 'renderer_names']


def renderer_names(component):
    """The renderer names of ``component`` (one of :data:`COMPONENTS`), in registration order."""
    if component not in RENDERERS:
        raise ValueError(f'degradation {component!r} has no renderers; renderers exist for {", ".join(COMPONENTS)}')
    return tuple(RENDERERS[component])
