"""Entry point of the frozen bundle: simclr_studio.__main__ (the app, or the CLI when given a subcommand).

A windowed build has no console: sys.stdout/sys.stderr are None on Windows and macOS, and any
print (or tqdm) would raise. They go to a log file in the user's cache folder instead.
"""

import os
import sys
from pathlib import Path


def _safe_streams() -> None:
    if sys.stdout is not None and sys.stderr is not None:
        return
    log_dir = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "simclr-studio"
    try:
        log_dir.mkdir(parents=True, exist_ok=True)
        stream = open(log_dir / "app.log", "a", buffering=1, encoding="utf-8", errors="replace")
    except OSError:
        stream = open(os.devnull, "w")
    if sys.stdout is None:
        sys.stdout = stream
    if sys.stderr is None:
        sys.stderr = stream


if __name__ == "__main__":
    _safe_streams()
    import multiprocessing

    multiprocessing.freeze_support()  # DataLoader workers re-enter this executable
    from simclr_studio.__main__ import main

    sys.exit(main())
