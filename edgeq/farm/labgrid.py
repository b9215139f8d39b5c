"""Boards of a shared farm run by labgrid's coordinator (PyPI ``labgrid``, gRPC): acquire a place,
take its ``NetworkService`` resource (address, username, port) as the board's address, run, release.

In FARM.toml::

    [labgrid]
    coordinator = "labgrid.example.net:20408"
    busy = "wait"          # a place someone else holds: wait for it (up to wait_s), or "skip" it
    wait_s = 600

    [[devices]]
    profile = "rpi4"       # what the board is (runtime, delegate, sensors); its address comes from:
    labgrid_place = "lab-pi-3"

A place is released when the board's work ends, when the run fails, and when it is interrupted
(Ctrl-C, SIGTERM: ``edgeq farm run`` turns SIGTERM into an interrupt). A ``kill -9`` cannot release
it: labgrid then shows the place acquired by this host/user until ``labgrid-client -p PLACE release``.
The place must already exist on the coordinator with a match for a ``NetworkService``; an exporter
publishes that resource (``NetworkService: {address: ..., username: ..., port: ...}``).

labgrid's own client session (``labgrid.remote.client.ClientSession``) talks to the coordinator; it
runs on an event loop in one thread of its own, and every board's worker asks it through that loop.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import threading
import time
from collections.abc import Callable, Coroutine, Iterator
from typing import Any, TypeVar

from edgeq.devices.profile import DeviceProfile
from edgeq.errors import DeviceError, UserInputError
from edgeq.farm.locks import BoardBusy
from edgeq.farm.plan import Labgrid

T = TypeVar("T")
POLL_S = 1.0
CALL_TIMEOUT_S = 30.0


def _missing() -> UserInputError:
    return UserInputError(
        "this farm names labgrid places but labgrid is not installed",
        "pip install 'edgeq[labgrid]' (or pip install labgrid)",
    )


class Places:
    """One session with the coordinator for a run: :meth:`hold` acquires a place (waiting or
    skipping when it is busy) and releases it afterwards; leaving releases whatever is still held."""

    def __init__(self, cfg: Labgrid) -> None:
        self.cfg = cfg
        self.loop: asyncio.AbstractEventLoop | None = None
        self.thread: threading.Thread | None = None
        self.session: Any = None
        self.held: set[str] = set()
        self._lock = threading.Lock()

    # ---------------------------------------------------------------------------- the session

    def __enter__(self) -> Places:
        try:
            from labgrid.remote.client import ClientSession
            from labgrid.util.proxy import proxymanager
        except ImportError:
            raise _missing() from None
        address = proxymanager.get_grpc_address(self.cfg.coordinator, default_port=20408)
        loop = asyncio.new_event_loop()
        self.loop = loop
        self.thread = threading.Thread(target=loop.run_forever, name="edgeq-labgrid", daemon=True)
        self.thread.start()

        async def start() -> Any:
            session = ClientSession(address, loop, args=argparse.Namespace(allow_unmatched=False, kick=False))
            await session.start()
            return session

        try:
            self.session = self._call(start(), timeout=CALL_TIMEOUT_S)
        except Exception as exc:
            self._stop_loop()
            raise DeviceError(
                f"cannot reach the labgrid coordinator at {self.cfg.coordinator}: {_why(exc)}",
                "check [labgrid] coordinator in FARM.toml and that labgrid-coordinator runs there",
            ) from None
        return self

    def __exit__(self, *exc: object) -> None:
        with self._lock:
            left = sorted(self.held)
        for name in left:
            with contextlib.suppress(Exception):
                self.release(name)
        if self.session is not None:
            with contextlib.suppress(Exception):
                self._call(self._close(), timeout=10)
        self._stop_loop()

    async def _close(self) -> None:
        await self.session.stop()
        await self.session.close()

    def _stop_loop(self) -> None:
        if self.loop is not None:
            self.loop.call_soon_threadsafe(self.loop.stop)
            if self.thread is not None:
                self.thread.join(5)
            if not self.loop.is_running():
                self.loop.close()
            self.loop = None

    def _call(self, coro: Coroutine[Any, Any, T], timeout: float = CALL_TIMEOUT_S) -> T:
        assert self.loop is not None
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    # ------------------------------------------------------------------------------ places

    def try_acquire(self, name: str) -> str | None:
        """Acquire ``name``: None when it is ours now, else who holds it (``host/user``)."""
        return self._call(self._acquire(name))

    async def _acquire(self, name: str) -> str | None:
        import grpc
        from labgrid.remote.generated import labgrid_coordinator_pb2 as pb

        s = self.session
        await s.sync_with_coordinator()
        place = s.places.get(name)
        if place is None:
            known = ", ".join(sorted(s.places)) or "none"
            raise UserInputError(
                f"labgrid place {name!r} does not exist on {self.cfg.coordinator} (places: {known})",
                "fix labgrid_place in FARM.toml, or create it: labgrid-client -p NAME create; add-match ...",
            )
        if place.acquired:
            return str(place.acquired)
        try:
            await s.stub.AcquirePlace(pb.AcquirePlaceRequest(placename=name))
        except grpc.aio.AioRpcError as exc:
            await s.sync_with_coordinator()
            place = s.places.get(name)
            if place is not None and place.acquired:
                return str(place.acquired)  # someone was quicker
            raise DeviceError(
                f"labgrid refused to acquire place {name!r}: {exc.details()}",
                "check the place with labgrid-client -p NAME show",
            ) from None
        await s.sync_with_coordinator()
        with self._lock:
            self.held.add(name)
        return None

    def release(self, name: str) -> None:
        with self._lock:
            if name not in self.held:
                return
            self.held.discard(name)
        self._call(self._release(name))

    async def _release(self, name: str) -> None:
        from labgrid.remote.generated import labgrid_coordinator_pb2 as pb

        await self.session.stub.ReleasePlace(pb.ReleasePlaceRequest(placename=name))
        await self.session.sync_with_coordinator()

    def address(self, name: str) -> tuple[str, str | None, int]:
        """(address, username, port) of the acquired place's NetworkService."""
        return self._call(self._address(name))

    async def _address(self, name: str) -> tuple[str, str | None, int]:
        s = self.session
        await s.sync_with_coordinator()
        place = s.places[name]
        try:
            resources = s.get_target_resources(place)
        except Exception as exc:
            raise DeviceError(
                f"labgrid place {name!r}: {_why(exc)}", "check its exporter is running"
            ) from None
        found = [r for (_, cls), r in resources.items() if cls == "NetworkService"]
        if not found:
            raise UserInputError(
                f"labgrid place {name!r} has no NetworkService resource",
                "add a NetworkService (address, username, port) to its exporter and a match to the place",
            )
        res = found[0]
        if not res.avail:
            raise DeviceError(
                f"the NetworkService of labgrid place {name!r} is not available (its exporter is offline)",
                "start the exporter that publishes it",
            )
        params = res.params
        if (params.get("extra") or {}).get("proxy_required"):
            raise UserInputError(
                f"labgrid place {name!r} is only reachable through its exporter (proxy_required)",
                "edgeq connects to boards directly: make the board's address reachable from this host",
            )
        args = res.args
        address = str(args.get("address") or "")
        if not address:
            raise UserInputError(
                f"the NetworkService of labgrid place {name!r} has no address", "set its address"
            )
        return address, (args.get("username") or None), int(args.get("port") or 22)

    @contextlib.contextmanager
    def hold(
        self,
        name: str,
        profile: DeviceProfile,
        stop: threading.Event,
        emit: Callable[..., None],
    ) -> Iterator[DeviceProfile | None]:
        """The profile pointed at place ``name`` while it is held; None when it is busy and the
        farm says skip. Waiting past ``wait_s`` raises :class:`BoardBusy`."""
        deadline = time.monotonic() + self.cfg.wait_s
        told = False
        while True:
            holder = self.try_acquire(name)
            if holder is None:
                break
            if self.cfg.busy == "skip":
                yield None
                return
            if not told:
                emit(
                    "board", state="waiting", message=f"labgrid place {name} is acquired by {holder}: waiting"
                )
                told = True
            if time.monotonic() >= deadline or stop.is_set():
                raise BoardBusy(
                    f"labgrid place {name} is busy: acquired by {holder}; waited {self.cfg.wait_s:.0f} s",
                    'wait for it to be released, raise [labgrid] wait_s, or set busy = "skip"',
                )
            stop.wait(POLL_S)
        try:
            address, user, port = self.address(name)
            target = (
                f"{user + '@' if user else ''}{'[' + address + ']' if ':' in address else address}:{port}"
            )
            emit("board", state="acquired", message=f"labgrid place {name}: {target}")
            yield profile.with_target(target)
        finally:
            self.release(name)
            emit("board", state="released", message=f"labgrid place {name} released")


def _why(exc: BaseException) -> str:
    details = getattr(exc, "details", None)
    if callable(details):
        with contextlib.suppress(Exception):
            return str(details())
    text = str(exc).strip().splitlines()
    return text[0][:300] if text else type(exc).__name__
