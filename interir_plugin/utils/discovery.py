"""Suffix scan that imports a subpackage's modules, as BasicSR does for its own archs, losses and data."""
import importlib
import os


def import_suffixed(package, folder, suffix):
    """Import every ``*<suffix>.py`` module of ``folder`` package-qualified.

    Args:
        package (str): Dotted name of the package that owns ``folder`` (e.g. ``'interir_plugin.archs'``).
        folder (str): Directory of that package.
        suffix (str): File-name suffix without ``.py`` (e.g. ``'_arch'``).

    Returns:
        list: The imported modules, in file-name order (deterministic registration order).
    """
    names = sorted(name[:-3] for name in os.listdir(folder) if name.endswith(f'{suffix}.py'))
    return [importlib.import_module(f'{package}.{name}') for name in names]
