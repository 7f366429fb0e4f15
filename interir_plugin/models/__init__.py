"""Model classes. Every ``*_model.py`` is imported, which registers its classes in BasicSR's ``MODEL_REGISTRY``."""
import os

from interir_plugin.utils import import_suffixed

_modules = import_suffixed(__name__, os.path.dirname(os.path.abspath(__file__)), '_model')
