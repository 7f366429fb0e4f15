"""How the tool subcommands meet the terminal: one-line warnings and errors instead of tracebacks."""
import contextlib
import warnings


def _one_line_warning(message, category, filename, lineno, file=None, line=None):
    return f'{category.__name__}: {message}\n'


@contextlib.contextmanager
def user_errors(command):
    """Show warnings on one line, and turn bad-input errors into ``SystemExit('interir <command>: ...')``.

    Bad input (missing files, wrong options, refused outputs) raises ``FileNotFoundError``, ``ValueError`` or
    ``KeyError`` in the tools; their message names what is at fault, so a traceback adds nothing. Other errors
    keep their traceback.

    Args:
        command (str): Subcommand name, for the message.
    """
    saved = warnings.formatwarning
    warnings.formatwarning = _one_line_warning
    try:
        yield
    except (FileNotFoundError, ValueError, KeyError) as err:
        raise SystemExit(f'interir {command}: {err}') from err
    finally:
        warnings.formatwarning = saved


def route_basicsr_log(log_file, verbose=False):
    """Send BasicSR's log (``basicsr`` logger, INFO) to ``log_file`` and keep only warnings on the console.

    BasicSR configures its logger once per process, on the first ``get_root_logger`` call (later calls, such as
    the pipelines' own, get that logger unchanged). Called before the pipelines, this makes ``log_file`` the
    one log of every pipeline run in the process. If the logger was configured already, nothing changes.

    Args:
        log_file (str): Log file (its folder is created).
        verbose (bool): Keep INFO messages on the console too. Default: False.

    Returns:
        bool: Whether this call configured the logger.
    """
    import logging
    import os

    from basicsr.utils.logger import get_root_logger, initialized_logger

    if 'basicsr' in initialized_logger:
        return False
    os.makedirs(os.path.dirname(os.path.abspath(log_file)), exist_ok=True)
    logger = get_root_logger(log_level=logging.INFO, log_file=log_file)
    if not verbose:
        for handler in logger.handlers:
            if type(handler) is logging.StreamHandler:  # the console handler, not the FileHandler subclass
                handler.setLevel(logging.WARNING)
    return True
