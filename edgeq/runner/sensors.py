"""What the power and thermal readers share: sysfs reads, commands, warnings, periodic sampling.

Device side: standard library only, Python 3.8 syntax. Every sysfs path is taken relative to a
configurable root (``--sysfs-root``, default ``/sys``) so an emulated tree can stand in for the
kernel's in tests; the readers never assume anything the kernel would not provide.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import threading
import time
from typing import Any, Callable, Dict, List, Optional, Sequence, Set, Tuple

from .protocol import Emitter, RunnerError, one_line

DEFAULT_SYSFS_ROOT = "/sys"
DEFAULT_VCGENCMD = "vcgencmd"


class SensorError(Exception):
    """A sensor that is missing, unreadable or answers nonsense: becomes one warning, never a failure."""

    def __init__(self, message: str, hint: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint


def sys_path(root: str, *parts: str) -> str:
    """``root/parts...``: kernel paths are written relative to /sys (``class/hwmon``, not ``/sys/class/hwmon``)."""
    return os.path.join(root, *parts)


def read_text(path: str) -> str:
    """One sysfs attribute, stripped. Any OSError (EACCES, ENODATA, EIO, EISDIR...) propagates."""
    with open(path) as f:
        return f.read().strip()


def read_number(path: str) -> float:
    text = read_text(path)
    try:
        return float(int(text))
    except ValueError:
        try:
            return float(text)
        except ValueError:
            raise SensorError("%s holds %r, not a number" % (path, text[:40])) from None


def try_read_text(path: str) -> Optional[str]:
    try:
        return read_text(path)
    except OSError:
        return None


def try_read_number(path: str) -> Optional[float]:
    try:
        return read_number(path)
    except (OSError, SensorError):
        return None


def numbered(names: Sequence[str], prefix: str) -> List[Tuple[int, str]]:
    """``["hwmon10", "hwmon2"]`` → ``[(2, "hwmon2"), (10, "hwmon10")]``: kernel numbering order."""
    out = []
    pat = re.compile(r"^%s(\d+)$" % re.escape(prefix))
    for name in names:
        m = pat.match(name)
        if m:
            out.append((int(m.group(1)), name))
    return sorted(out)


def list_dir(path: str) -> List[str]:
    try:
        return sorted(os.listdir(path))
    except OSError:
        return []


def os_error_text(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return "%s (%s)" % (exc.strerror, exc.filename or "")
    return one_line(exc)


def run_command(argv: Sequence[str], timeout_s: float = 5.0) -> str:
    """Run a sensor command (vcgencmd, a meter's CLI); its stdout, or SensorError."""
    try:
        proc = subprocess.run(
            list(argv),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            universal_newlines=True,
            timeout=timeout_s,
        )
    except FileNotFoundError:
        raise SensorError("command not found: %s" % argv[0]) from None
    except subprocess.TimeoutExpired:
        raise SensorError("%s did not answer within %.1f s" % (argv[0], timeout_s)) from None
    except OSError as exc:
        raise SensorError("cannot run %s: %s" % (argv[0], os_error_text(exc))) from None
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()
        raise SensorError(
            "%s exited %d%s" % (" ".join(argv), proc.returncode, (": " + tail[-1][:200]) if tail else "")
        )
    return proc.stdout


class Warnings:
    """Warnings of one run: each distinct problem (by ``code``) is emitted once, as it happens.

    A sensor that fails on every one of 1000 samples is still one warning: the host sees a
    ``{"event": "warning", "code": ..., "message": ..., "hint": ...}`` line when it first happens
    and the result carries the list under ``warnings``.
    """

    def __init__(self, emitter: Optional[Emitter] = None) -> None:
        self._emitter = emitter
        self._codes: Set[str] = set()
        self.items: List[Dict[str, str]] = []
        self._pending: List[Dict[str, str]] = []
        self._lock = threading.Lock()

    def warn(self, code: str, message: str, hint: str = "") -> bool:
        """Record (and emit) a warning; False when one with this code was already given.

        Only the main thread writes events (progress lines come from it too, and the Emitter has no
        lock): a sampler thread's warning is kept until the main thread calls :meth:`flush`.
        """
        with self._lock:
            if code in self._codes:
                return False
            self._codes.add(code)
            item = {"code": code, "message": message, "hint": hint}
            self.items.append(item)
            self._pending.append(item)
        self.flush()
        return True

    def flush(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        with self._lock:
            pending, self._pending = self._pending, []
        if self._emitter is not None:
            for item in pending:
                self._emitter.emit("warning", **item)

    def has(self, code: str) -> bool:
        return code in self._codes


class PeriodicSampler:
    """Calls ``read()`` every ``period_s`` on a daemon thread; keeps (monotonic ns, value) pairs.

    The timestamp of a reading is the midpoint of the call (a vcgencmd call takes milliseconds).
    Deadlines are absolute, so the rate does not drift; a read slower than the period just makes the
    next one start at once (the achieved rate then says so). A failing read is counted, the first
    error kept, and sampling goes on.
    """

    def __init__(self, read: Callable[[], Any], period_s: float, name: str = "sampler") -> None:
        self._read = read
        self.period_ns = max(1, int(period_s * 1e9))
        self.times: List[int] = []
        self.values: List[Any] = []
        self.errors = 0
        self.first_error: Optional[BaseException] = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)
        # Reads are serialized: the main thread also reads (at window marks), and two overlapping
        # reads could otherwise get timestamps in one order and values in the other, which a
        # wrapping counter would take for a wrap.
        self._lock = threading.Lock()

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def read_now(self) -> Tuple[int, Any]:
        """One synchronous reading (raises what the reader raises)."""
        with self._lock:
            t0 = time.monotonic_ns()
            value = self._read()
            t1 = time.monotonic_ns()
        return (t0 + t1) // 2, value

    def _loop(self) -> None:
        clock = time.monotonic_ns
        deadline = clock()
        while not self._stop.is_set():
            try:
                t, value = self.read_now()
                self.times.append(t)
                self.values.append(value)
            except Exception as exc:
                self.errors += 1
                if self.first_error is None:
                    self.first_error = exc
            deadline += self.period_ns
            now = clock()
            if deadline < now:
                deadline = now  # fell behind (a slow read): start again at once, do not burst
            elif self._stop.wait((deadline - now) / 1e9):
                break


def parse_json_object(text: Optional[str], option: str) -> Optional[Dict[str, Any]]:
    """``--power-config '{"source": "ina2xx"}'`` → dict; a malformed one is bad input."""
    if text is None:
        return None
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise RunnerError(
            "bad_input", "%s is not valid JSON: %s" % (option, one_line(exc)), "pass one JSON object"
        ) from None
    if not isinstance(value, dict):
        raise RunnerError("bad_input", "%s must be a JSON object" % option, 'e.g. {"source": "rapl"}')
    return value


class ConfigReader:
    """Typed access to one config object: unknown keys and wrong types are bad input, in one line."""

    def __init__(self, data: Dict[str, Any], option: str, known: Sequence[str]) -> None:
        self.data = data
        self.option = option
        unknown = sorted(set(data) - set(known))
        if unknown:
            raise RunnerError(
                "bad_input",
                "%s: unknown key%s %s" % (option, "s" if len(unknown) > 1 else "", ", ".join(unknown)),
                "known keys: %s" % ", ".join(sorted(known)),
            )

    def _bad(self, key: str, want: str) -> RunnerError:
        return RunnerError(
            "bad_input", "%s: %s must be %s, got %r" % (self.option, key, want, self.data.get(key)), ""
        )

    def number(
        self, key: str, default: Optional[float], minimum: float = 0.0, positive: bool = False
    ) -> Optional[float]:
        value = self.data.get(key, default)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise self._bad(key, "a number")
        if value < minimum or (positive and not value > 0):
            raise self._bad(key, "> 0" if positive else ">= %g" % minimum)
        return float(value)

    def string(
        self, key: str, default: Optional[str], choices: Optional[Sequence[str]] = None
    ) -> Optional[str]:
        value = self.data.get(key, default)
        if value is None:
            return None
        if not isinstance(value, str) or (choices is not None and value not in choices):
            raise self._bad(key, "one of %s" % ", ".join(choices) if choices else "a string")
        return value

    def strings(self, key: str) -> Optional[List[str]]:
        value = self.data.get(key)
        if value is None:
            return None
        if isinstance(value, str):
            return [value]
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise self._bad(key, "a list of strings")
        return list(value)

    def flag(self, key: str, default: Any) -> Any:
        value = self.data.get(key, default)
        if not isinstance(value, bool) and value != default:
            raise self._bad(key, "true or false")
        return value
