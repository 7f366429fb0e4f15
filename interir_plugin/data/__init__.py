"""Datasets. Every ``*_dataset.py`` is imported, which registers its classes in BasicSR's ``DATASET_REGISTRY``."""
import os

from interir_plugin.utils import import_suffixed

_modules = import_suffixed(__name__, os.path.dirname(os.path.abspath(__file__)), '_dataset')
