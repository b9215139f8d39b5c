#!/usr/bin/env python3
"""Two small TCP proxies for the test farm (standard library asyncio only).

delay    forwards every connection to one target and holds each chunk for DELAY ms in each direction:
         link latency, which the kernel here cannot add (no netem). Chunks are timestamped on arrival
         and released DELAY ms later, so latency does not cap throughput (like a long cable, not a
         slow one).

             farm_proxy.py delay --listen 10.213.7.12:22 --target 127.0.0.1:22 --delay-ms 40

connect  an HTTP CONNECT proxy limited to an allow-list of host:port and to clients in one subnet.
         The farm's boards sit on a private bridge with no route out; this is how pip on a board
         reaches PyPI (sshd sets HTTPS_PROXY for every session).

             farm_proxy.py connect --listen 10.213.7.1:3128 --clients 10.213.7.0/24 \\
                 --allow pypi.org:443 --allow files.pythonhosted.org:443
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ipaddress
import sys
import time

CHUNK = 64 * 1024
# Chunks in flight per direction: bounds what the proxy buffers (bufferbloat would hide the link's
# real behaviour from interactive traffic during a transfer).
QUEUE_CHUNKS = 32


def log(msg: str) -> None:
    print(f"{time.strftime('%H:%M:%S')} {msg}", file=sys.stderr, flush=True)


async def pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, delay_s: float) -> None:
    """Copy reader to writer, each chunk released delay_s after it arrived; half-close at EOF."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue(maxsize=QUEUE_CHUNKS)

    async def receive() -> None:
        while True:
            try:
                data = await reader.read(CHUNK)
            except ConnectionError:
                data = b""
            await queue.put((loop.time() + delay_s, data))
            if not data:
                return

    async def send() -> None:
        while True:
            due, data = await queue.get()
            wait = due - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
            if not data:
                if writer.can_write_eof():
                    with contextlib.suppress(OSError):
                        writer.write_eof()
                return
            writer.write(data)
            await writer.drain()

    await asyncio.gather(receive(), send())


async def splice(
    a: tuple[asyncio.StreamReader, asyncio.StreamWriter],
    b: tuple[asyncio.StreamReader, asyncio.StreamWriter],
    delay_s: float,
) -> None:
    try:
        await asyncio.gather(pump(a[0], b[1], delay_s), pump(b[0], a[1], delay_s))
    except (ConnectionError, OSError):
        pass
    finally:
        for w in (a[1], b[1]):
            w.close()
            with contextlib.suppress(Exception):
                await w.wait_closed()


def hostport(value: str) -> tuple[str, int]:
    host, _, port = value.rpartition(":")
    if not host or not port.isdigit():
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {value!r}")
    return host.strip("[]"), int(port)


async def run_delay(args: argparse.Namespace) -> None:
    target_host, target_port = args.target
    delay_s = args.delay_ms / 1000.0

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")
        try:
            upstream = await asyncio.open_connection(target_host, target_port)
        except OSError as e:
            log(f"{peer}: cannot reach {target_host}:{target_port}: {e}")
            writer.close()
            return
        await splice((reader, writer), upstream, delay_s)

    server = await asyncio.start_server(handle, *args.listen, reuse_address=True)
    log(f"delay proxy {args.listen[0]}:{args.listen[1]} -> {target_host}:{target_port}, {args.delay_ms} ms")
    async with server:
        await server.serve_forever()


async def run_connect(args: argparse.Namespace) -> None:
    allowed = {(h.lower(), p) for h, p in args.allow}
    clients = ipaddress.ip_network(args.clients) if args.clients else None

    async def refuse(writer: asyncio.StreamWriter, status: str) -> None:
        writer.write(f"HTTP/1.1 {status}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".encode())
        with contextlib.suppress(OSError):
            await writer.drain()
        writer.close()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")
        if clients is not None and ipaddress.ip_address(peer[0]) not in clients:
            log(f"{peer}: refused, not a farm client")
            writer.close()
            return
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout=30)
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError, OSError):
            writer.close()
            return
        parts = head.split(b"\r\n", 1)[0].decode("latin-1").split()
        if len(parts) != 3 or parts[0].upper() != "CONNECT":
            await refuse(writer, "405 Method Not Allowed")
            return
        try:
            host, port = hostport(parts[1])
        except argparse.ArgumentTypeError:
            await refuse(writer, "400 Bad Request")
            return
        if (host.lower(), port) not in allowed:
            log(f"{peer}: CONNECT {host}:{port} refused (not in the allow-list)")
            await refuse(writer, "403 Forbidden")
            return
        try:
            upstream = await asyncio.wait_for(asyncio.open_connection(host, port), timeout=30)
        except (OSError, TimeoutError) as e:
            log(f"{peer}: CONNECT {host}:{port} failed: {e}")
            await refuse(writer, "502 Bad Gateway")
            return
        log(f"{peer}: CONNECT {host}:{port}")
        writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
        await splice((reader, writer), upstream, 0.0)

    server = await asyncio.start_server(handle, *args.listen, reuse_address=True)
    log(f"CONNECT proxy {args.listen[0]}:{args.listen[1]}, allowed: {sorted(allowed)}")
    async with server:
        await server.serve_forever()


def main() -> None:
    p = argparse.ArgumentParser(description="TCP proxies for the edgeq test farm")
    sub = p.add_subparsers(dest="mode", required=True)
    d = sub.add_parser("delay", help="forward to one target with added latency")
    d.add_argument("--listen", type=hostport, required=True)
    d.add_argument("--target", type=hostport, required=True)
    d.add_argument("--delay-ms", type=float, required=True, help="added one-way delay, each direction")
    c = sub.add_parser("connect", help="HTTP CONNECT proxy with an allow-list")
    c.add_argument("--listen", type=hostport, required=True)
    c.add_argument("--allow", type=hostport, action="append", default=[], help="HOST:PORT (repeatable)")
    c.add_argument("--clients", help="only accept clients in this network, e.g. 10.213.7.0/24")
    args = p.parse_args()
    runner = run_delay if args.mode == "delay" else run_connect
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(runner(args))


if __name__ == "__main__":
    main()
