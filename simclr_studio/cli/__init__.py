"""The ``simclr-studio`` command line: train, embed, eval, export and curate from the shell.

    __init__   main(): parse, dispatch, and the one place that turns expected failures into one line
    parser     the parser: every flag, in groups; a config file's values become the flags' defaults
    train      ``train``: the run's config, processes, progress on the terminal, the app's link, signals
    features   ``embed``, ``eval`` and ``export``: what a trained encoder gives
    curate     ``curate``: near-duplicates, outliers and likely mislabeled images, as a CSV report

Expected failures (missing folder, bad config, corrupt checkpoint, a run folder another process
writes...) print one line and exit 2; Ctrl-C before a run can stop cleanly prints "interrupted" and
exits 130; only real bugs print a traceback. Opening the desktop app is the launcher's (``simclr_studio.__main__``):
nothing here imports the app.
"""

from __future__ import annotations

import sys
from pathlib import Path

EXIT_USAGE = 2
EXIT_FAILED = 1
EXIT_INTERRUPTED = 130
DEMO_MINUTES = 2.0  # `train --demo` without --epochs: a two-minute run of the default recipe
SUBCOMMANDS = ("train", "embed", "eval", "export", "curate")
TORCHRUN = "torchrun"  # hidden: torchrun itself, for a frozen bundle, which has no `python -m` (see distributed.py)


class CliError(Exception):
    """An expected failure, told as one line (exit 2)."""


def is_command(argv: list[str]) -> bool:
    """Whether ``argv`` is for the command line (a subcommand, help or version) rather than the app."""
    return bool(argv) and argv[0] in (*SUBCOMMANDS, TORCHRUN, "-h", "--help", "--version")


def demo_folder() -> Path:
    """The bundled demo images (inside the installed package, or resources/ in a source checkout)."""
    from simclr_studio.paths import resource

    folder = resource("demo")
    if not folder.is_dir():
        raise CliError("the bundled demo folder is missing from this installation")
    return folder


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else [str(a) for a in argv]
    try:
        if argv[:1] == [TORCHRUN]:
            return _torchrun(argv[1:])
        expected = _expected_errors()  # imports torch: Ctrl-C here is "interrupted" too
        return _run(argv, expected)
    except KeyboardInterrupt:  # before the run's own handlers are set (start-up imports), or an abort
        print("simclr-studio: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


def _expected_errors() -> tuple[type[Exception], ...]:
    from simclr_studio.checkpoint import CheckpointError
    from simclr_studio.config import ConfigError
    from simclr_studio.data import DataError
    from simclr_studio.run_lock import RunBusyError

    return CliError, CheckpointError, ConfigError, DataError, RunBusyError


def _run(argv: list[str], expected: tuple[type[Exception], ...]) -> int:
    try:
        from simclr_studio.cli.parser import parse_args

        args = parse_args(argv)  # reads a config file: its errors are one line too
        if args.command is None:
            print("simclr-studio: error: choose a command: " + ", ".join(SUBCOMMANDS) + " (see --help)",
                  file=sys.stderr)
            return EXIT_USAGE
        return int(args.func(args))
    except expected as exc:
        print(f"simclr-studio: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except OSError as exc:  # a path that is a folder, a full disk, no permission...
        print(f"simclr-studio: error: {exc.strerror or exc}: {exc.filename or ''}".rstrip(": "), file=sys.stderr)
        return EXIT_USAGE


def _torchrun(argv: list[str]) -> int:
    """``simclr-studio torchrun ...``: torchrun in this process (a frozen bundle's workers are itself)."""
    from torch.distributed.run import main as torchrun

    try:
        torchrun(argv)
    except Exception:  # torchrun has reported which worker failed and how
        return EXIT_FAILED
    return 0
