"""How a size in bytes is told to the user, the same everywhere: binary units (1 GB = 2³⁰ bytes, as
memory is counted), whole bytes, one decimal from KB up."""

from __future__ import annotations

KB, MB, GB = 1 << 10, 1 << 20, 1 << 30


def format_size(n_bytes: float) -> str:
    """'512 bytes', '1.5 KB', '12.3 MB', '2.0 GB'."""
    if n_bytes < KB:
        return f"{int(n_bytes)} bytes"
    for unit, size in (("KB", KB), ("MB", MB)):
        if n_bytes < 1000 * size:  # "1000.0 KB" reads worse than "1.0 MB"
            return f"{n_bytes / size:.1f} {unit}"
    return f"{n_bytes / GB:.1f} GB"
