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
