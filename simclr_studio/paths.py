"""Where bundled resources live: inside the installed package, or resources/ in a source checkout."""

from __future__ import annotations

from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent


def resource(*parts: str) -> Path:
    """A bundled file or folder (demo images, icons, styles); the installed copy wins."""
    for root in (_PACKAGE / "resources", _PACKAGE.parent / "resources"):
        candidate = root.joinpath(*parts)
        if candidate.exists():
            return candidate
    return _PACKAGE.joinpath("resources", *parts)
