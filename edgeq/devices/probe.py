"""Fixed programs edgeq runs on a device with its Python (inputs are argv elements, never program
text), and reading their answers. Used by ``devices check`` and ``devices setup``.
"""

from __future__ import annotations

import json
import posixpath
from typing import Any

from packaging.version import InvalidVersion, Version

from edgeq.devices.transports import CommandResult, Transport

MIN_PYTHON = (3, 8)  # the device-side runner's floor
VENV = "venv"
PROBE_TIMEOUT_S = 120.0
PIP_TIMEOUT_S = 1800.0
# What the device reports about itself. argv: [1] runtime module, [2] delegate, [3] workdir,
# [4] comma-separated distributions to report versions of. Must run on Python 3.7 (Mendel) and up.
PROBE_PROGRAM = r"""
import glob, json, os, platform, shutil, sys, time
mod, delegate, workdir, dists = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4].split(",")
out = {"python": platform.python_version(), "executable": sys.executable, "machine": platform.machine(),
       "kernel": platform.release(), "cpu_count": os.cpu_count(), "os": ""}
try:
    for line in open("/etc/os-release"):
        if line.startswith("PRETTY_NAME="):
            out["os"] = line.split("=", 1)[1].strip().strip('"')
except OSError:
    pass
try:
    for line in open("/proc/meminfo"):
        if line.startswith("MemTotal:"):
            out["mem_total_mb"] = int(line.split()[1]) // 1024
except OSError:
    pass
p = workdir
while p and not os.path.exists(p):
    p = os.path.dirname(p)
out["workdir_exists"] = os.path.isdir(workdir)
out["workdir_writable"] = bool(p) and os.access(p, os.W_OK)
out["disk_free_mb"] = shutil.disk_usage(p or "/").free // (1 << 20)
try:
    from importlib import metadata as md
    def version(d):
        try:
            return md.version(d)
        except Exception:
            return None
except ImportError:
    import pkg_resources
    def version(d):
        try:
            return pkg_resources.get_distribution(d).version
        except Exception:
            return None
out["packages"] = dict((d, version(d)) for d in dists if d)
t0 = time.time()
try:
    sub = {"ai_edge_litert": "ai_edge_litert.interpreter", "tflite_runtime": "tflite_runtime.interpreter"}
    __import__(sub.get(mod, mod))
    out["runtime_import"] = {"ok": True, "seconds": round(time.time() - t0, 3)}
except BaseException as e:
    out["runtime_import"] = {"ok": False, "error": (type(e).__name__ + ": " + str(e)).splitlines()[0][:300]}
print(json.dumps(out))
"""

# argv[1] = directory: create it (and parents); print "created" or "exists".
MKDIR_PROGRAM = r"""
import os, sys
d = sys.argv[1]
if os.path.isdir(d):
    print("exists")
else:
    os.makedirs(d)
    print("created")
"""

# argv[1:] = distributions: print {dist: version or null} as JSON.
VERSIONS_PROGRAM = r"""
import json, sys
try:
    from importlib import metadata as md
    def version(d):
        try:
            return md.version(d)
        except Exception:
            return None
except ImportError:
    import pkg_resources
    def version(d):
        try:
            return pkg_resources.get_distribution(d).version
        except Exception:
            return None
print(json.dumps(dict((d, version(d)) for d in sys.argv[1:])))
"""

# argv[1] = module to import: exit 0 when it imports; else the error on stderr.
IMPORT_PROGRAM = r"""
import sys
sub = {"ai_edge_litert": "ai_edge_litert.interpreter", "tflite_runtime": "tflite_runtime.interpreter"}
__import__(sub.get(sys.argv[1], sys.argv[1]))
print("ok")
"""


def venv_python(workdir: str) -> str:
    return posixpath.join(workdir, VENV, "bin", "python")


def last_line(res: CommandResult) -> str:
    """The last line the command printed (stderr first), for a one-line failure."""
    lines = (res.stderr.strip() or res.stdout.strip()).splitlines()
    return lines[-1][:300] if lines else f"exit code {res.exit_code}"


def run_json(
    transport: Transport, argv: list[str], timeout: float = PROBE_TIMEOUT_S
) -> tuple[dict[str, Any] | None, CommandResult]:
    """Run ``argv``; its last JSON-object line of stdout, or None (with the result) when it failed."""
    res = transport.run(argv, timeout=timeout)
    if res.exit_code != 0:
        return None, res
    for line in reversed(res.stdout.strip().splitlines()):
        try:
            data = json.loads(line)
        except ValueError:
            continue
        if isinstance(data, dict):
            return data, res
    return None, res


def python_version(text: str) -> tuple[int, int]:
    """``"3.11.2"`` → ``(3, 11)``; ``(0, 0)`` for anything unreadable."""
    try:
        release = Version(text.strip()).release
    except InvalidVersion:
        return (0, 0)
    return (release[0], release[1] if len(release) > 1 else 0)


def fmt_version(v: tuple[int, int]) -> str:
    return f"{v[0]}.{v[1]}"
