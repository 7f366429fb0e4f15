"""Test from an option file with BasicSR's test pipeline (results/ in the current directory)."""
from interir_plugin.cli._basicsr import add_common_arguments, run_pipeline


def add_arguments(parser):
    add_common_arguments(parser)


def run(args):
    return run_pipeline('test', args)
