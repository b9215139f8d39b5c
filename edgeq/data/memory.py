"""How much memory this machine can give, checked before a large array is made (not after the kernel
has killed the process)."""

from __future__ import annotations

from pathlib import Path

from edgeq.errors import UserInputError

MEMINFO = Path("/proc/meminfo")
GIB = 1 << 30


def available_bytes() -> int | None:
    """``MemAvailable`` from /proc/meminfo (what can be allocated without swapping), or None where the
    kernel does not say (not Linux, or a restricted /proc)."""
    try:
        for line in MEMINFO.read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def gib(n_bytes: float) -> str:
    """``3.2 GiB`` (or MiB below 1 GiB), for messages."""
    if n_bytes >= GIB:
        return f"{n_bytes / GIB:.1f} GiB"
    return f"{n_bytes / (1 << 20):.0f} MiB"


def require(needed_bytes: float, what: str, hint: str) -> None:
    """Raise a one-line UserInputError when ``what`` needs more than the available memory.

    >>> require(6 * 4000 * 4000 * 3 * 4, "6 images of 4000x4000x3 as float32", "pass a smaller --image-size")
    """
    have = available_bytes()
    if have is not None and needed_bytes > have:
        raise UserInputError(f"{what} needs {gib(needed_bytes)} of memory; {gib(have)} is available", hint)
