"""BasicSR's own ``train_pipeline`` / ``test_pipeline`` started from an option file, after the plugin's check."""
import contextlib
import io
import logging
import os
import sys

from interir_plugin.models.time_budget import TimeBudgetReached
from interir_plugin.tools.options import OptionFileError, check_option_file

#: what each kind of run starts, as ``(module, function)``.
PIPELINES = {'train': ('basicsr.train', 'train_pipeline'), 'test': ('basicsr.test', 'test_pipeline')}


def basicsr_argv(option_path, launcher='none', auto_resume=False, debug=False, force_yml=None):
    """The argument list BasicSR's ``parse_options`` reads from ``sys.argv`` (after the program name).

    Args:
        option_path (str): Option file.
        launcher (str): ``none``, ``pytorch`` or ``slurm``. Default: 'none'.
        auto_resume (bool): Resume from the newest state. Default: False.
        debug (bool): BasicSR's debug mode. Default: False.
        force_yml (list[str] | None): ``--force_yml`` entries (``key:sub=value``). Default: None.

    Returns:
        list[str]: The arguments.
    """
    argv = ['-opt', option_path, '--launcher', launcher]
    if auto_resume:
        argv.append('--auto_resume')
    if debug:
        argv.append('--debug')
    if force_yml:
        argv += ['--force_yml', *force_yml]
    return argv


def run_basicsr(kind, option_path, root='.', force_yml=None, launcher='none', auto_resume=False, debug=False,
                log_stdout=True):
    """Run BasicSR's ``train_pipeline`` or ``test_pipeline`` in this process with ``root`` as its root folder.

    The option file is checked first (:func:`~interir_plugin.tools.options.check_option_file`), so a typo raises
    :class:`~interir_plugin.tools.options.OptionFileError` before BasicSR creates or renames a folder. Dataset paths
    in the option file stay relative to the current directory; ``experiments/``, ``results/`` and ``tb_logger/`` go
    under ``root``.

    Args:
        kind (str): ``'train'`` or ``'test'``.
        option_path (str): Option file.
        root (str): Root folder of BasicSR's outputs. Default: '.'.
        force_yml (list[str] | None): BasicSR ``--force_yml`` entries (``key:sub=value``). Default: None.
        launcher (str): ``none``, ``pytorch`` or ``slurm``. Default: 'none'.
        auto_resume (bool): Resume from the newest complete state (training). Default: False.
        debug (bool): BasicSR's debug mode (training). Default: False.
        log_stdout (bool): Send what BasicSR prints ("Disable distributed." ...) to its log instead of the console.
            Default: True.

    Returns:
        TimeBudgetReached | None: When ``train.time_budget`` ended the run, its ``iters`` and ``seconds``; else None.
    """
    if kind not in PIPELINES:
        raise ValueError(f'run_basicsr: kind must be train or test, got {kind!r}')
    try:
        check_option_file(option_path, is_train=kind == 'train')
    except (FileNotFoundError, ValueError) as err:
        raise OptionFileError(str(err)) from err
    module, name = PIPELINES[kind]
    pipeline = getattr(__import__(module, fromlist=[name]), name)
    saved = sys.argv
    sys.argv = [f'interir {kind}', *basicsr_argv(option_path, launcher, auto_resume, debug, force_yml)]
    printed = io.StringIO()
    try:
        with contextlib.redirect_stdout(printed) if log_stdout else contextlib.nullcontext():
            pipeline(os.path.abspath(root))
    except TimeBudgetReached as spent:  # train.time_budget ended the run (weights saved as latest)
        return spent
    finally:
        sys.argv = saved
        for line in printed.getvalue().splitlines():
            logging.getLogger('basicsr').info(line)
