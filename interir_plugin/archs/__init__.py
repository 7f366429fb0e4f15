"""Networks. Every ``*_arch.py`` is imported, which registers its class in BasicSR's ``ARCH_REGISTRY``;
each plugin arch is then also registered in the plugin's mmengine ``MODELS`` registry (scope
``interir_plugin``, child of mmengine's root ``MODELS``), so ``MODELS.build(dict(type='InterIR'))`` works in
mmengine-based toolboxes too."""
import os

from basicsr.utils.registry import ARCH_REGISTRY
from mmengine.registry import MODELS as MMENGINE_MODELS
from mmengine.registry import Registry

from interir_plugin.utils import import_suffixed

MODELS = Registry('model', parent=MMENGINE_MODELS, scope='interir_plugin')

_arch_modules = import_suffixed(__name__, os.path.dirname(os.path.abspath(__file__)), '_arch')
PLUGIN_ARCHS = sorted(name for name, cls in ARCH_REGISTRY if cls.__module__.startswith(f'{__name__}.'))
for _name in PLUGIN_ARCHS:
    MODELS.register_module(name=_name, module=ARCH_REGISTRY.get(_name))

__all__ = ['MODELS', 'PLUGIN_ARCHS']
