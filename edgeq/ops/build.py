"""Build the ternary kernel library with the system C compiler, cached by source hash.

``build_library()`` builds ``libedgeq_ops.so`` (core kernels + the LiteRT registration shim) for
the host; ``build_library("aarch64")`` cross-compiles it with Debian's ``aarch64-linux-gnu-gcc``
(package ``gcc-aarch64-linux-gnu``). ``build_cli()`` builds the standalone kernel driver used for
cross-architecture bit-exactness checks. Nothing here needs TensorFlow headers.

Example::

    from edgeq.ops.build import build_library
    lib = build_library()            # ~/.cache/edgeq/ops/<hash>/x86_64/libedgeq_ops.so
"""

from __future__ import annotations

import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
from pathlib import Path

from edgeq.errors import EdgeqError, UserInputError

KERNEL_DIR = Path(__file__).parent / "kernels"
LIBRARY_SOURCES = ("ternary.c", "litert_shim.c")
CLI_SOURCES = ("ternary_cli.c", "ternary.c")
HEADERS = ("ternary.h",)
CFLAGS = ("-O3", "-std=c11", "-Wall", "-Wextra", "-fPIC")
LIBRARY_NAME = "libedgeq_ops.so"
CLI_NAME = "edgeq_ternary_cli"

COMPILERS = {"x86_64": "x86_64-linux-gnu-gcc", "aarch64": "aarch64-linux-gnu-gcc"}
DEBIAN_PACKAGES = {
    "x86_64": "gcc-x86-64-linux-gnu libc6-dev-amd64-cross",
    "aarch64": "gcc-aarch64-linux-gnu libc6-dev-arm64-cross",
}


def host_arch() -> str:
    return platform.machine()


def cache_dir() -> Path:
    """``$EDGEQ_OPS_CACHE``, else ``$XDG_CACHE_HOME/edgeq/ops``, else ``~/.cache/edgeq/ops``."""
    if os.environ.get("EDGEQ_OPS_CACHE"):
        return Path(os.environ["EDGEQ_OPS_CACHE"])
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "edgeq" / "ops"


def compiler_for(arch: str) -> str:
    """The C compiler that targets ``arch``: plain ``gcc`` (or ``cc``) on a native host, else the
    Debian cross compiler; a UserInputError naming the package to install when there is none."""
    if arch == host_arch():
        for cc in ("gcc", "cc", COMPILERS.get(arch, "")):
            if cc and shutil.which(cc):
                return cc
    elif arch in COMPILERS and shutil.which(COMPILERS[arch]):
        return COMPILERS[arch]
    if arch not in COMPILERS:
        raise UserInputError(f"no known C compiler for {arch}", f"use one of {', '.join(COMPILERS)}")
    pkg = DEBIAN_PACKAGES[arch] if arch != host_arch() else "gcc"
    raise UserInputError(
        f"no C compiler for {arch} found (looked for {COMPILERS[arch] if arch != host_arch() else 'gcc'})",
        f"install it: apt-get install {pkg}",
    )


def _compiler_id(cc: str) -> str:
    out = subprocess.run([cc, "--version"], capture_output=True, text=True, check=False)
    return (out.stdout.splitlines() or [cc])[0]


def source_hash(sources: tuple[str, ...], cc: str, flags: tuple[str, ...]) -> str:
    """Hash of the sources, headers, flags and compiler version: the cache key."""
    h = hashlib.sha256()
    for name in (*sources, *HEADERS):
        h.update(name.encode())
        h.update((KERNEL_DIR / name).read_bytes())
    h.update(" ".join(flags).encode())
    h.update(_compiler_id(cc).encode())
    return h.hexdigest()[:16]


def _compile(cc: str, args: list[str], out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".part", dir=out.parent)
    os.close(fd)
    try:
        res = subprocess.run([cc, *args, "-o", tmp], capture_output=True, text=True, check=False)
        if res.returncode != 0:
            first = (res.stderr.strip().splitlines() or ["(no output)"])[:5]
            raise EdgeqError(
                f"{cc} failed to build {out.name}: " + " | ".join(first),
                "check the compiler installation; the sources are in edgeq/ops/kernels/",
            )
        os.chmod(tmp, 0o755)
        os.replace(tmp, out)
    finally:
        Path(tmp).unlink(missing_ok=True)


def build_library(arch: str | None = None, *, out_dir: Path | None = None, force: bool = False) -> Path:
    """Build (or reuse) ``libedgeq_ops.so`` for ``arch`` (default: the host). Returns its path."""
    arch = arch or host_arch()
    cc = compiler_for(arch)
    flags = (*CFLAGS, "-shared")
    key = source_hash(LIBRARY_SOURCES, cc, flags)
    out = (out_dir or cache_dir() / key / arch) / LIBRARY_NAME
    if force or not out.exists():
        _compile(cc, [*flags, *(str(KERNEL_DIR / s) for s in LIBRARY_SOURCES), "-ldl"], out)
    return out


def build_cli(arch: str | None = None, *, static: bool = False, out_dir: Path | None = None) -> Path:
    """Build the standalone ``edgeq_ternary_cli`` driver (``static=True`` for qemu-user runs)."""
    arch = arch or host_arch()
    cc = compiler_for(arch)
    flags = (*CFLAGS, *(("-static",) if static else ()))
    key = source_hash(CLI_SOURCES, cc, flags)
    out = (out_dir or cache_dir() / key / arch) / CLI_NAME
    if not out.exists():
        _compile(cc, [*flags, *(str(KERNEL_DIR / s) for s in CLI_SOURCES)], out)
    return out
