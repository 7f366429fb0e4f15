"""Arguments shared by ``interir train`` and ``interir test``, and their hand-over to
:func:`interir_plugin.tools.pipelines.run_basicsr`."""


def add_common_arguments(parser):
    parser.add_argument('-opt', '--opt', required=True, help='path to the option YAML file')
    parser.add_argument('--launcher', choices=['none', 'pytorch', 'slurm'], default='none', help='job launcher')
    parser.add_argument('--force_yml', nargs='+', default=None,
                        help='override option entries, e.g. train:ema_decay=0.999 (BasicSR syntax)')


def run_pipeline(kind, args):
    """Run BasicSR's ``kind`` pipeline with the experiment root in the current working directory; bad option files
    end the command with one line naming the file and key."""
    import os

    from interir_plugin.tools.options import OptionFileError
    from interir_plugin.tools.pipelines import run_basicsr

    try:
        spent = run_basicsr(kind, args.opt, os.getcwd(), args.force_yml, args.launcher,
                            getattr(args, 'auto_resume', False), getattr(args, 'debug', False), log_stdout=False)
    except OptionFileError as err:
        raise SystemExit(f'interir {kind}: {err}') from None
    if spent is not None:
        print(f'interir {kind}: {spent}; weights in experiments/<name>/models/net_g_latest.pth')
    return 0
