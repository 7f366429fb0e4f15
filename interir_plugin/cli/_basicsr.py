"""Hand a parsed ``interir train|test`` over to BasicSR's pipelines, which parse ``sys.argv`` themselves."""
import os
import sys

from interir_plugin.cli._options import check_option_file


def basicsr_argv(args):
    """Rebuild the argument list BasicSR's ``parse_options`` expects from our parsed arguments."""
    argv = ['-opt', args.opt, '--launcher', args.launcher]
    if getattr(args, 'auto_resume', False):
        argv.append('--auto_resume')
    if getattr(args, 'debug', False):
        argv.append('--debug')
    if args.force_yml:
        argv += ['--force_yml', *args.force_yml]
    return argv


def add_common_arguments(parser):
    parser.add_argument('-opt', '--opt', required=True, help='path to the option YAML file')
    parser.add_argument('--launcher', choices=['none', 'pytorch', 'slurm'], default='none', help='job launcher')
    parser.add_argument('--force_yml', nargs='+', default=None,
                        help='override option entries, e.g. train:ema_decay=0.999 (BasicSR syntax)')


def run_pipeline(pipeline_name, args):
    """Run ``basicsr.<pipeline_name>`` with the experiment root in the current working directory."""
    if not os.path.isfile(args.opt):
        raise SystemExit(f'interir: option file not found: {args.opt}')
    try:
        check_option_file(args.opt, is_train=pipeline_name == 'train')
    except ValueError as err:
        raise SystemExit(f'interir {pipeline_name}: {err}') from None
    if pipeline_name == 'train':
        from basicsr.train import train_pipeline as pipeline
    else:
        from basicsr.test import test_pipeline as pipeline
    saved = sys.argv
    sys.argv = [f'interir {pipeline_name}', *basicsr_argv(args)]
    try:
        pipeline(os.getcwd())
    finally:
        sys.argv = saved
    return 0
