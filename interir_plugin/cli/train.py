"""Train from an option file with BasicSR's trainer (experiments/ and tb_logger/ in the current directory)."""
import argparse

from interir_plugin.cli._basicsr import add_common_arguments, run_pipeline


def add_arguments(parser):
    add_common_arguments(parser)
    parser.add_argument('--auto_resume', action='store_true', help='resume from the newest complete state')
    parser.add_argument('--debug', action='store_true', help="BasicSR's debug mode (frequent logs and saves)")
    parser.add_argument('--local_rank', type=int, default=0, help=argparse.SUPPRESS)  # torch.distributed.launch


def run(args):
    return run_pipeline('train', args)
