"""The launcher, ``simclr-studio`` (and ``python -m simclr_studio``): the desktop app, or the command line.

    simclr-studio [PATH] [--demo]       open the app (on an image or run folder, or the demo images)
    simclr-studio COMMAND ...           the command line (simclr_studio.cli): train, embed, eval, export

The app starts its training processes as ``python -m simclr_studio train --link ...``. Only this
module imports the app, and only to open it: a command never loads Qt.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from simclr_studio import cli


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else [str(a) for a in argv]
    try:
        if cli.is_command(argv):
            return cli.main(argv)
        return open_app(argv)
    except KeyboardInterrupt:  # Ctrl-C while the app's or a command's modules load: no traceback
        print("simclr-studio: interrupted", file=sys.stderr)
        return cli.EXIT_INTERRUPTED


def open_app(argv: list[str]) -> int:
    """``simclr-studio [PATH] [--demo]``: open the desktop app (on an image or run folder)."""
    parser = argparse.ArgumentParser(
        prog="simclr-studio", description="Open the desktop app. Commands: " + ", ".join(cli.SUBCOMMANDS)
        + " (see simclr-studio COMMAND --help).")
    parser.add_argument("path", nargs="?", metavar="PATH", help="an image folder or a run folder to open")
    parser.add_argument("--demo", action="store_true", help="open the bundled demo images")
    args = parser.parse_args(argv)
    if args.path and not Path(args.path).is_dir():
        print(f"simclr-studio: error: not a folder: {args.path}", file=sys.stderr)
        return cli.EXIT_USAGE
    try:
        from simclr_studio.gui.app import run_app
    except ImportError as exc:
        print(f"simclr-studio: error: the desktop app cannot start ({exc}); the CLI commands still work",
              file=sys.stderr)
        return cli.EXIT_FAILED
    return run_app(args.path, demo=args.demo)


if __name__ == "__main__":
    sys.exit(main())
