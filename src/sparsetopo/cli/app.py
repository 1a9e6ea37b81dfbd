"""The click group every subcommand module attaches to, and the process entry point.

Click rather than Typer: it is the stable layer Typer itself is built on, and our commands need
its exceptions (usage errors) directly to print one-line errors without tracebacks.
"""

from __future__ import annotations

import sys
import threading
import warnings

import click

from sparsetopo.errors import SparsetopoError, SparsetopoWarning, interrupt_in


@click.group(
    name="sparsetopo",
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
)
@click.version_option(package_name="sparsetopo")
def app():
    """Sparse neural network topologies fixed before training.

    After "Sparse Neural Network Topologies" (Bourelly, Bouri, Choromanski). Build and inspect a
    layer's graph (topology), train a sparse MLP (train), run grids of networks (sweep),
    analyse them (analyze), remake the paper's figures and claims (reproduce, report) and
    export a saved sparse model to ONNX (export).
    Every command has --help with examples.
    """


def _terminate(signum, frame):
    """SIGTERM (a supervisor, ``timeout``, CI) stops a command the way Ctrl-C does: the same
    clean-up, the same exit, and the next run resumes."""
    raise KeyboardInterrupt


def error_text(exc: SparsetopoError) -> str:
    """What the CLI prints for a library error: its message, or, for a long one made of parts
    (:attr:`SparsetopoError.details`), a short first line and one indented line per part."""
    if not exc.details:
        return str(exc)
    return f"{exc.headline}:" + "".join(f"\n  {part}" for part in exc.details)


def _show_warning(default):
    """``warnings.showwarning`` for the CLI: the library's warnings as one line each
    (``sparsetopo: warning: ...``, no file and line), anything else as Python shows it."""
    def show(message, category, filename, lineno, file=None, line=None):
        if issubclass(category, SparsetopoWarning):
            click.echo(f"sparsetopo: warning: {message}", err=True)
        else:
            default(message, category, filename, lineno, file, line)
    return show


def entry() -> int:
    """The ``sparsetopo`` program: :func:`main`, then Ctrl-C ignored while Python shuts down.

    Once the command has finished there is nothing left for a Ctrl-C to stop. Python still runs
    its exit hooks (torch's among them), and a KeyboardInterrupt raised inside one prints a
    traceback after the command's own output, which a Ctrl-C at the end of a sweep did."""
    code = main()
    if threading.current_thread() is threading.main_thread():
        import signal

        signal.signal(signal.SIGINT, signal.SIG_IGN)
    return code


def main(argv: list[str] | None = None) -> int:
    """The CLI, callable in-process: one-line errors with exit code 2 for bad input, no traceback."""
    with warnings.catch_warnings():   # restores showwarning when the command ends
        warnings.showwarning = _show_warning(warnings.showwarning)
        return _main(argv)


def _main(argv: list[str] | None) -> int:
    import signal

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _terminate)
    try:
        import sparsetopo.cli.commands  # noqa: F401  (registers the subcommands; imports torch: seconds)

        app.main(args=argv, prog_name="sparsetopo", standalone_mode=False)
    except click.exceptions.NoArgsIsHelpError as exc:
        click.echo(exc.ctx.get_help() if exc.ctx else exc.format_message())
        return 0
    except click.UsageError as exc:
        where = f" (see '{exc.ctx.command_path} --help')" if exc.ctx and exc.ctx.parent else ""
        click.echo(f"sparsetopo: error: {exc.format_message()}{where}", err=True)
        return 2
    except (SparsetopoError, click.ClickException) as exc:
        message = exc.format_message() if isinstance(exc, click.ClickException) else error_text(exc)
        click.echo(f"sparsetopo: error: {message}", err=True)
        return 2
    except click.exceptions.Exit as exc:
        return exc.exit_code
    except OSError as exc:  # an unwritable output, a full disk, an unreadable input: name the path
        where = exc.filename if exc.filename is not None else ""
        reason = exc.strerror or exc.__class__.__name__
        click.echo(f"sparsetopo: error: {where}: {reason}" if where else f"sparsetopo: error: {reason}", err=True)
        return 2
    except MemoryError:
        click.echo("sparsetopo: error: out of memory: choose smaller sizes (or free memory) and run it again",
                   err=True)
        return 2
    except (click.Abort, KeyboardInterrupt):
        click.echo("sparsetopo: interrupted", err=True)
        return 130
    except Exception as exc:  # Ctrl-C inside an extension can come out wrapped in another error
        if interrupt_in(exc) is None:
            raise
        click.echo("sparsetopo: interrupted", err=True)
        return 130
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(entry())
