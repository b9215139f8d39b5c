"""The model's memory, apart from the runner's own.

``runner_baseline_rss_kb`` is the runner process with NumPy and the runtime imported, before the
model is loaded; ``peak_rss_kb`` the process's peak after the run; ``model_peak_rss_kb`` the
difference: what loading and running the model added. On Linux the peak is reset just before the
model is loaded (``/proc/self/clear_refs``), so imports that allocate and free do not count.
"""

from __future__ import annotations

import contextlib
import importlib
import sys
from typing import Any, Dict, Optional

# What each delegate imports to run, so the baseline includes the runtime, not only the runner.
_PRELOAD = {"openvino": ("openvino",), "edgetpu": (), "none": (), "xnnpack": ()}


def _status_kb(key: str) -> Optional[int]:
    """A ``VmRSS`` / ``VmHWM`` line of /proc/self/status in kB; None where there is none."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return None


def peak_rss_kb() -> Optional[int]:
    """This process's peak resident memory in kB.

    Linux: VmHWM from /proc/self/status. Not getrusage's ru_maxrss: the kernel carries that across
    exec, so a runner started by a big parent (a host with TensorFlow loaded) would report the
    parent's peak instead of its own.
    """
    peak = _status_kb("VmHWM")
    if peak is not None:
        return peak
    try:
        import resource
    except ImportError:  # not on Linux/macOS
        return None
    value = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    if sys.platform == "darwin":  # bytes there, kB on Linux
        value //= 1024
    return int(value)


def _reset_peak() -> bool:
    """Reset VmHWM to the current RSS (Linux >= 4.0); False where that is not possible."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


class MemoryWatch:
    def __init__(self) -> None:
        self.baseline: Optional[int] = None
        self.reset = False

    def preload(self, spec: Any) -> None:
        """Import what the spec's runtime needs before the baseline is taken."""
        from .runtimes import load_runtime

        # A missing runtime is reported properly by the delegate's own loader, right after this.
        for module in _PRELOAD.get(spec.delegate, ()):
            with contextlib.suppress(Exception):
                importlib.import_module(module)
        if spec.delegate in ("none", "xnnpack", "edgetpu"):
            with contextlib.suppress(Exception):
                load_runtime(spec.runtime)

    def start(self) -> None:
        self.baseline = _status_kb("VmRSS")
        self.reset = _reset_peak()

    def finish(self) -> Dict[str, Any]:
        peak = peak_rss_kb()
        out: Dict[str, Any] = {"peak_rss_kb": peak, "runner_baseline_rss_kb": self.baseline}
        if peak is not None and self.baseline is not None and self.reset:
            out["model_peak_rss_kb"] = max(peak - self.baseline, 0)
        return out
