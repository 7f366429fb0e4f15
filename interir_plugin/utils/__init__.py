"""Small helpers shared by every layer of the plugin: module discovery, complexity counting, checkpoints in and out
(the one loader), image decoding (the one rule), per-label metric summaries, markdown tables, resume fidelity."""
from interir_plugin.utils.discovery import import_suffixed

__all__ = ['import_suffixed']
