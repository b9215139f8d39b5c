"""What every sensor module shares: sysfs reads, commands, the Reader and Availability records,
warnings, periodic sampling, config parsing.

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

from ..protocol import Emitter, RunnerError, one_line

DEFAULT_SYSFS_ROOT = "/sys"
DEFAULT_VCGENCMD = "vcgencmd"

# What a probe found for one power source (``Availability.status``):
OK = "ok"  # there and readable now
ABSENT = "absent"  # not on this device (or not this source's hardware)
UNREADABLE = "unreadable"  # there, but cannot be read (permissions, a driver error, a failing command)
UNKNOWN = "unknown"  # cannot be told without the user's settings (an external meter's command)
STATUSES = (OK, ABSENT, UNREADABLE, UNKNOWN)


class SensorError(Exception):
    """A sensor that is missing, unreadable or answers nonsense: becomes one warning, never a failure.

    ``status`` says which (:data:`ABSENT` or :data:`UNREADABLE`), for probes that report it.
    """

    def __init__(self, message: str, hint: str = "", status: str = UNREADABLE) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.status = status


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
        raise SensorError("command not found: %s" % argv[0], status=ABSENT) from None
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


# --------------------------------------------------------------------------------------------------
# what a power sensor module offers


class Availability:
    """Whether one power source can be read here: ``present``, one line of ``detail``, a ``hint``.

    ``status`` refines ``present`` (see :data:`STATUSES`): a sensor that is there but unreadable is
    worth a warning, one that is absent usually is not. JSON-able through :meth:`as_dict`.
    """

    __slots__ = ("detail", "hint", "present", "status")

    def __init__(self, present: bool, detail: str, hint: str = "", status: Optional[str] = None) -> None:
        self.present = bool(present)
        self.detail = detail
        self.hint = hint
        self.status = status or (OK if present else ABSENT)
        if self.status not in STATUSES or (self.status == OK) != self.present:
            raise ValueError("inconsistent availability: present=%r status=%r" % (present, status))

    def as_dict(self) -> Dict[str, Any]:
        return {"present": self.present, "status": self.status, "detail": self.detail, "hint": self.hint}

    def __repr__(self) -> str:
        return "Availability(%r, %r, %r, %r)" % (self.present, self.detail, self.hint, self.status)


class Reader:
    """An opened power source. ``kind`` says what ``read()`` returns: ``"power"`` → mW, ``"energy"`` → µJ tuple.

    The constructor finds the sensor and reads it once (:meth:`check`), so a sensor that exists but
    cannot be read fails when it is opened, not in the middle of a run.
    """

    kind = "power"
    source = ""
    update_interval_s: Optional[float] = None  # how often the sensor produces a new value, if it says
    spawns_process = False
    sampled = True  # energy counters read only at the window edges set this False
    max_range_uj: Tuple[Optional[float], ...] = ()  # energy readers: where each counter wraps
    note: Optional[str] = None  # a caveat about what the figure covers, repeated in the result

    def read(self) -> Any:
        raise NotImplementedError

    def describe(self) -> Dict[str, Any]:
        return {"kind": self.kind}

    def summary(self) -> str:
        """One line for a probe: what was found and what it reads now."""
        value = self.read()
        if self.kind == "energy":
            return "%s counter(s) at %s µJ" % (self.source, ", ".join("%.0f" % v for v in value))
        return "%s reads %.1f mW" % (self.source, value)

    def check(self) -> None:
        try:
            self.read()
        except OSError as exc:
            raise SensorError(
                "%s sensor cannot be read: %s" % (self.source, os_error_text(exc)),
                "check the file's permissions, or run edgeq's runner on the device as root",
            ) from None


def detect_by_opening(open_reader: Callable[[], Reader]) -> Availability:
    """A sensor module's ``detect``: open the reader as a run would, and report; never raises."""
    try:
        reader = open_reader()
        return Availability(True, reader.summary())
    except SensorError as exc:
        status = exc.status if exc.status in (ABSENT, UNREADABLE) else UNREADABLE
        return Availability(False, exc.message, exc.hint, status)
    except Exception as exc:  # an odd tree or a bug must not take a probe down
        return Availability(
            False, "%s: %s" % (type(exc).__name__, one_line(exc)), "please report this", UNREADABLE
        )


def hwmon_dirs(root: str) -> List[Tuple[str, str]]:
    """(attribute directory, name) of every hwmon device, in hwmonN order.

    Attributes live in ``hwmonN/``; kernels before 3.x kept them in ``hwmonN/device/``.
    """
    base = sys_path(root, "class", "hwmon")
    out = []
    for _, entry in numbered(list_dir(base), "hwmon"):
        d = os.path.join(base, entry)
        for attrs in (d, os.path.join(d, "device")):
            name = try_read_text(os.path.join(attrs, "name"))
            if name is not None:
                out.append((attrs, name))
                break
    return out


def hwmon_update_interval_s(directory: str) -> Optional[float]:
    ms = try_read_number(os.path.join(directory, "update_interval"))  # hwmon ABI: milliseconds
    return ms / 1000.0 if ms and ms > 0 else None


# Rails that already are the whole module's input: summing them with the others would double count.
TOTAL_RAILS = ("VDD_IN", "POM_5V_IN", "VIN_SYS_5V0", "VIN")


def pick_rails(available: Sequence[str], wanted: Optional[Sequence[str]], what: str) -> List[str]:
    """The rails to sum: the wanted ones (any case), else a whole-input rail alone, else all."""
    if wanted:
        by_upper = {a.upper(): a for a in available}
        missing = [w for w in wanted if w.upper() not in by_upper]
        if missing:
            raise SensorError(
                "%s has no rail %s (it has: %s)" % (what, ", ".join(missing), ", ".join(available) or "none"),
                'set "rails" in --power-config to some of: %s' % ", ".join(available),
                status=ABSENT,
            )
        return [by_upper[w.upper()] for w in wanted]
    totals = [a for a in available if a.upper() in TOTAL_RAILS]
    return totals[:1] if totals else list(available)


# --------------------------------------------------------------------------------------------------
# one run's warnings and background sampling


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
    """Typed access to one config object: unknown keys and wrong types are bad input, in one line.

    With ``known`` keys, unknown ones are rejected at once. Without, every key read is recorded
    and :meth:`reject_unknown` (called once all readers have had their turn) rejects the rest: the
    power config's keys are the union of what each sensor module reads.
    """

    def __init__(self, data: Dict[str, Any], option: str, known: Optional[Sequence[str]] = None) -> None:
        self.data = data
        self.option = option
        self.seen: Set[str] = set()
        if known is not None:
            self.seen.update(known)
            self.reject_unknown()

    def reject_unknown(self) -> None:
        unknown = sorted(set(self.data) - self.seen)
        if unknown:
            raise RunnerError(
                "bad_input",
                "%s: unknown key%s %s" % (self.option, "s" if len(unknown) > 1 else "", ", ".join(unknown)),
                "known keys: %s" % ", ".join(sorted(self.seen)),
            )

    def bad(self, key: str, want: str) -> RunnerError:
        return RunnerError(
            "bad_input", "%s: %s must be %s, got %r" % (self.option, key, want, self.data.get(key)), ""
        )

    def raw(self, key: str, default: Any = None) -> Any:
        """The value as given (the caller checks it)."""
        self.seen.add(key)
        return self.data.get(key, default)

    def number(
        self, key: str, default: Optional[float], minimum: float = 0.0, positive: bool = False
    ) -> Optional[float]:
        value = self.raw(key, default)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise self.bad(key, "a number")
        if value < minimum or (positive and not value > 0):
            raise self.bad(key, "> 0" if positive else ">= %g" % minimum)
        return float(value)

    def string(
        self, key: str, default: Optional[str], choices: Optional[Sequence[str]] = None
    ) -> Optional[str]:
        value = self.raw(key, default)
        if value is None:
            return None
        if not isinstance(value, str) or (choices is not None and value not in choices):
            raise self.bad(key, "one of %s" % ", ".join(choices) if choices else "a string")
        return value

    def strings(self, key: str) -> Optional[List[str]]:
        value = self.raw(key)
        if value is None:
            return None
        if isinstance(value, str):
            return [value]
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise self.bad(key, "a list of strings")
        return list(value)

    def flag(self, key: str, default: Any) -> Any:
        value = self.raw(key, default)
        if not isinstance(value, bool) and value != default:
            raise self.bad(key, "true or false")
        return value
