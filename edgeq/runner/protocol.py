"""JSON-lines events on stdout, and the errors that end a run with a documented exit code."""

from __future__ import annotations

import json
import os
import sys
import time
from typing import IO, Any, Optional

# Same numbers as edgeq.errors on the host (the runner cannot import the host package).
EXIT_OK = 0
EXIT_BAD_INPUT = 2
EXIT_DEVICE = 3

ERROR_KINDS = {
    "bad_input": EXIT_BAD_INPUT,
    "runtime_missing": EXIT_DEVICE,
    "runtime_failure": EXIT_DEVICE,
}


class RunnerError(Exception):
    """A failure reported to the host as one ``error`` event."""

    def __init__(self, kind: str, message: str, hint: str = "") -> None:
        if kind not in ERROR_KINDS:
            raise ValueError("unknown error kind %r" % kind)
        super().__init__(message)
        self.kind = kind
        self.message = message
        self.hint = hint

    @property
    def exit_code(self) -> int:
        return ERROR_KINDS[self.kind]


def one_line(exc: BaseException, limit: int = 300) -> str:
    """The first non-empty line of an exception's text, shortened: runtimes raise multi-line errors."""
    text = str(exc).strip()
    for line in text.splitlines():
        line = line.strip()
        if line:
            text = line
            break
    else:
        text = type(exc).__name__
    if len(text) > limit:
        text = text[: limit - 3] + "..."
    return text


def root_cause(exc: BaseException) -> BaseException:
    """The innermost exception of a chain.

    Bindings hide the real error: tflite-runtime under NumPy 2 raises ``SystemError: <built-in
    method ...> returned a result with an exception set`` whose cause is the NumPy ImportError.
    """
    seen = 0
    while seen < 10:
        nxt = exc.__cause__ or exc.__context__
        if nxt is None:
            break
        exc = nxt
        seen += 1
    return exc


def protocol_stream() -> IO[str]:
    """Take fd 1 for events and point fd 1 and ``sys.stdout`` at stderr.

    Native runtimes may print to stdout (C ``printf``); after this nothing but our events can reach
    the host's parser.
    """
    try:
        sys.stdout.flush()
        fd = os.dup(1)
        os.dup2(2, 1)
    except (OSError, AttributeError, ValueError):
        return sys.stdout
    stream = os.fdopen(fd, "w", encoding="utf-8", buffering=1)
    sys.stdout = sys.stderr
    return stream


class Emitter:
    """Writes one JSON object per line and flushes it, so the host sees events as they happen."""

    def __init__(self, stream: IO[str]) -> None:
        self._stream = stream

    def emit(self, event: str, **fields: Any) -> None:
        obj = {"event": event}
        obj.update(fields)
        self._stream.write(json.dumps(obj, separators=(",", ":")) + "\n")
        self._stream.flush()


class Progress:
    """Throttled progress events for one phase: at most one per ``interval_s``, plus the last one."""

    def __init__(self, emitter: Emitter, phase: str, total: int, interval_s: float = 0.5) -> None:
        self._emitter = emitter
        self.phase = phase
        self.total = total
        self._interval = interval_s
        self._last = time.monotonic()
        self._emitter.emit("progress", phase=phase, done=0, total=total)

    def update(self, done: int, total: Optional[int] = None) -> None:
        if total is not None:
            self.total = total
        now = time.monotonic()
        if now - self._last >= self._interval:
            self._last = now
            self._emitter.emit("progress", phase=self.phase, done=done, total=max(self.total, done))

    def finish(self, done: int) -> None:
        self._emitter.emit("progress", phase=self.phase, done=done, total=done)
