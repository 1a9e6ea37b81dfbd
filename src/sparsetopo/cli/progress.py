"""The one progress display of the CLI: a tqdm bar with ETA on a terminal, plain lines otherwise.

Everything goes to stderr, so stdout stays clean for ``--json`` and pipes. On a terminal a bar
redraws in place; when stderr is not a terminal (a log file, CI, a pipe) each step can print
one line with its count and ETA instead, so long jobs never sit silent.
"""

from __future__ import annotations

import sys
import time

import click


def duration(seconds: float) -> str:
    """``1h05m`` or ``4m07s``."""
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}h{rest // 60:02d}m" if hours else f"{rest // 60}m{rest % 60:02d}s"


class Progress:
    """Progress of ``total`` steps of ``unit``; use as a context manager and call :meth:`update`.

    ``lines``: when stderr is not a terminal, print one line per update (else stay silent).
    """

    def __init__(self, unit: str, total: int | None = None, desc: str | None = None, lines: bool = True):
        self.unit, self.total, self.desc, self.lines = unit, total, desc, lines
        self.tty = sys.stderr.isatty()
        self.bar = None
        self.started = time.perf_counter()
        self.run_seconds, self.runs = 0.0, 0   # core-seconds of the runs finished, for the ETA on CPUs

    def __enter__(self) -> "Progress":
        return self

    def update(self, done: int, total: int | None = None, postfix: str = "", line: str | None = None,
               eta: float | None = None) -> None:
        """``done`` of ``total`` steps are finished; ``postfix`` shows beside the bar, ``line``
        (default ``postfix``) is what a non-terminal gets; ``eta`` (seconds) replaces the one
        from the elapsed time."""
        total = total if total is not None else self.total
        if self.tty:
            if self.bar is None:
                from tqdm import tqdm

                self.bar = tqdm(total=total, unit=self.unit, file=sys.stderr, dynamic_ncols=True, desc=self.desc)
            self.bar.n = done
            self.bar.set_postfix_str(postfix, refresh=True)
            return
        if not self.lines:
            return
        elapsed = time.perf_counter() - self.started
        if eta is None and done and total:
            eta = elapsed / done * (total - done)
        click.echo(f"[{done}/{total}] {line if line is not None else postfix}"
                   + (f", ETA {duration(eta)}" if eta is not None else ""), err=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None

    def __exit__(self, *exc) -> None:
        self.close()

    # adapters for the library's callbacks

    def on_run(self, event) -> None:
        """``on_result`` for :func:`sparsetopo.sweep.run_sweep`: one update per finished run."""
        c = event.config
        accuracy = "" if event.test_accuracy is None else f"{event.test_accuracy:.3f}"
        last = _last_line(event.error) if event.status in ("retry", "failed") else ""
        postfix = f"{c.construction} {event.status} {accuracy}{_clip(last, 60)}".rstrip()
        degrees = 'full' if c.degrees is None else ','.join('full' if k is None else str(k) for k in c.degrees)
        sparsity = f"k {degrees}" if c.architecture == "mlp" else f"{c.architecture} density {c.density:g}"
        what = f"{c.construction} hidden {','.join(map(str, c.hidden))} {sparsity} seed {c.seed}"
        if event.status in ("retry", "failed"):
            line = f"{event.status} {event.run_id} {what}: {_clip(last, 200)}"
        else:
            line = f"{event.status} {event.run_id} {what}: accuracy {event.test_accuracy:.4f} ({event.seconds:.1f} s)"
            self.run_seconds += event.seconds or 0.0
            self.runs += 1
        eta = None
        if event.cpus:   # the CPUs in use now: runs left x core-seconds a run / CPUs
            cpus = f"{event.cpus} CPU{'' if event.cpus == 1 else 's'}"
            postfix += f", {cpus}"
            line += f", {cpus} in use"
            if self.runs:
                eta = (event.total - event.done) * self.run_seconds / self.runs / event.cpus
        self.update(event.done, event.total, postfix, line, eta=eta)

    def on_epoch(self, record) -> None:
        """``on_epoch`` for :func:`sparsetopo.train.train`: one update per finished epoch."""
        self.update(record.epoch, postfix=f"loss={record.train_loss:.4f}, acc={record.test_accuracy:.4f}")


def _last_line(error: str | None) -> str:
    """The line of an error that says what happened (a traceback's last)."""
    lines = (error or "").strip().splitlines()
    return lines[-1] if lines else ""


def _clip(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 3] + "..."


def step(label: str) -> None:
    """Announce a stage of a command on a terminal (stderr); a short command stays quiet in logs."""
    if sys.stderr.isatty():
        click.echo(f"{label}...", err=True)


def stage(label: str) -> None:
    """Announce a stage of a long command (stderr), on a terminal or not: minutes of silence in
    a log look like a hang."""
    click.echo(f"{label}...", err=True)
