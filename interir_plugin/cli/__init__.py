"""The ``interir`` command. Every module in this package not starting with ``_`` is one subcommand: it
defines ``add_arguments(parser)`` and ``run(args)``, and its docstring's first line is the help text.
``interir train`` and ``interir test`` hand over to BasicSR's own ``train_pipeline`` / ``test_pipeline``."""
import argparse
import importlib
import os
import pkgutil


def _subcommands():
    folder = os.path.dirname(os.path.abspath(__file__))
    names = sorted(m.name for m in pkgutil.iter_modules([folder]) if not m.name.startswith('_'))
    return {name: importlib.import_module(f'{__name__}.{name}') for name in names}


def build_parser():
    """The argument parser of ``interir`` with one sub-parser per subcommand module."""
    from interir_plugin.version import __version__

    parser = argparse.ArgumentParser(prog='interir', description='InterIR / DGUNet tools on top of BasicSR.')
    parser.add_argument('--version', action='version', version=f'interir_plugin {__version__}')
    sub = parser.add_subparsers(dest='command', metavar='COMMAND', required=True)
    for name, module in _subcommands().items():
        doc = (module.__doc__ or '').strip()
        p = sub.add_parser(name, help=doc.splitlines()[0] if doc else name, description=doc)
        module.add_arguments(p)
        p.set_defaults(_run=module.run)
    return parser


def main(argv=None):
    """Entry point of the ``interir`` console script."""
    args = build_parser().parse_args(argv)
    return args._run(args)
