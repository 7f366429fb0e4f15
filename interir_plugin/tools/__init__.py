"""Logic of the user tools behind ``interir demo|bench|explain|infer|profile``.

The command-line modules in :mod:`interir_plugin.cli` only parse arguments and print; everything that reads
option files, runs networks, computes numbers or draws figures lives here, so it can be called from Python too.
Figures use matplotlib's Agg backend and are written as PNG.
"""
