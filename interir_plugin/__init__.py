"""InterIR, DGUNet/DGUNet+ and multi-degradation data for BasicSR.

``import interir_plugin`` applies the BasicSR compatibility shims (:mod:`interir_plugin.compat`) and registers
every plugin arch, loss, dataset and model class in BasicSR's registries (archs also in mmengine's ``MODELS``
under the ``interir_plugin`` scope). Option files then name them like BasicSR's own.
"""
from interir_plugin import compat

compat.apply()

from interir_plugin import archs, data, losses, models  # noqa: E402  (registration after the shims)
from interir_plugin.version import __version__  # noqa: E402

__all__ = ['archs', 'compat', 'data', 'losses', 'models', '__version__']
