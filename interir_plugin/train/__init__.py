"""``python -m interir_plugin.train -opt X.yml [...]``: the same as ``interir train`` (see ``__main__.py``)."""
