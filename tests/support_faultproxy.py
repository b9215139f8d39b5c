"""A TCP proxy that breaks connections on purpose, for testing what the SSH transport does with faults.

``FaultProxy(("127.0.0.1", sshd_port), cuts=20, max_offset=300_000, seed=1)`` listens on
``proxy.port``; each new connection gets a random byte budget (client→server) while cuts are left, and
is reset (RST, like a dropped link) when it reaches it. A connection that ends before its budget gives
the cut back, so exactly ``cuts`` cuts happen if the traffic keeps coming. ``freeze()`` stops
forwarding without closing (a link that went silent); ``cut_all()`` resets every open connection now.
"""

from __future__ import annotations

import contextlib
import random
import selectors
import socket
import struct
import threading
import time
from dataclasses import dataclass, field
from types import TracebackType


@dataclass
class ProxyStats:
    connections: int = 0
    cut_offsets: list[int] = field(default_factory=list)  # client→server bytes at which each cut came
    bytes_up: int = 0
    bytes_down: int = 0


def _reset(sock: socket.socket) -> None:
    """Close with RST (SO_LINGER 0), the way a dropped link or a killed peer looks."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    with contextlib.suppress(OSError):
        sock.close()


class FaultProxy:
    def __init__(
        self,
        target: tuple[str, int],
        cuts: int = 0,
        max_offset: int = 1 << 20,
        min_offset: int = 0,
        seed: int | None = None,
    ) -> None:
        self.target = target
        self.cuts_left = cuts
        self.min_offset = min_offset
        self.max_offset = max_offset
        self.rng = random.Random(seed)
        self.stats = ProxyStats()
        self.frozen = threading.Event()
        self._lock = threading.Lock()
        self._conns: list[tuple[socket.socket, socket.socket]] = []
        self._stop = threading.Event()
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(64)
        self._listener.settimeout(0.1)
        self.host = "127.0.0.1"
        self.port = int(self._listener.getsockname()[1])
        self._threads: list[threading.Thread] = []
        self._acceptor = threading.Thread(target=self._accept_loop, name="faultproxy-accept", daemon=True)
        self._acceptor.start()

    # -------------------------------------------------------------------------- control

    def freeze(self) -> None:
        """Stop forwarding in both directions; sockets stay open (a silent, not a broken, link)."""
        self.frozen.set()

    def thaw(self) -> None:
        self.frozen.clear()

    def cut_all(self) -> None:
        with self._lock:
            conns, self._conns = self._conns, []
        for a, b in conns:
            _reset(a)
            _reset(b)

    def close(self) -> None:
        self._stop.set()
        self._acceptor.join(timeout=2)
        with contextlib.suppress(OSError):
            self._listener.close()
        self.cut_all()
        for t in self._threads:
            t.join(timeout=2)

    def __enter__(self) -> FaultProxy:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # -------------------------------------------------------------------------- work

    def _accept_loop(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                _reset(client)
                continue
            with self._lock:
                self.stats.connections += 1
                budget: int | None = None
                if self.cuts_left > 0:
                    self.cuts_left -= 1
                    budget = self.rng.randint(self.min_offset, self.max_offset)
                self._conns.append((client, upstream))
            t = threading.Thread(target=self._pump, args=(client, upstream, budget), daemon=True)
            self._threads.append(t)
            t.start()

    def _pump(self, client: socket.socket, upstream: socket.socket, budget: int | None) -> None:
        sel = selectors.DefaultSelector()
        client.setblocking(False)
        upstream.setblocking(False)
        sel.register(client, selectors.EVENT_READ, upstream)
        sel.register(upstream, selectors.EVENT_READ, client)
        up = 0
        cut = False
        try:
            while not self._stop.is_set():
                if self.frozen.is_set():
                    self._stop.wait(0.05)
                    continue
                for key, _ in sel.select(timeout=0.1):
                    src: socket.socket = key.fileobj  # type: ignore[assignment]
                    dst: socket.socket = key.data
                    try:
                        data = src.recv(65536)
                    except (BlockingIOError, InterruptedError):
                        continue
                    if not data:
                        return
                    if src is client:
                        if budget is not None and up + len(data) >= budget:
                            _send_all(dst, data[: budget - up])
                            cut = True
                            with self._lock:
                                self.stats.cut_offsets.append(budget)
                                self.stats.bytes_up += budget - up
                            return
                        up += len(data)
                        with self._lock:
                            self.stats.bytes_up += len(data)
                    else:
                        with self._lock:
                            self.stats.bytes_down += len(data)
                    _send_all(dst, data)
        except OSError:
            return
        finally:
            sel.close()
            with self._lock:
                if (client, upstream) in self._conns:
                    self._conns.remove((client, upstream))
                if budget is not None and not cut:
                    self.cuts_left += 1  # the connection ended on its own: the cut is still owed
            if cut:
                _reset(client)
                _reset(upstream)
            else:
                with contextlib.suppress(OSError):
                    client.close()
                with contextlib.suppress(OSError):
                    upstream.close()


def _send_all(sock: socket.socket, data: bytes) -> None:
    view = memoryview(data)
    while view:
        try:
            n = sock.send(view)
        except (BlockingIOError, InterruptedError):
            time.sleep(0.001)  # the peer's window is full: wait a moment
            continue
        view = view[n:]
