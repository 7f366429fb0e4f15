"""Small helpers shared by every layer of the plugin (module discovery, complexity counting, checkpoints)."""
from interir_plugin.utils.discovery import import_suffixed

__all__ = ['import_suffixed']
