#!/usr/bin/env python3
"""A test farm of three SSH hosts on this machine, in network namespaces on a private bridge.

    farm.py up      [--hosts plain,degraded,arm64]   start (or confirm) the farm; prints farm.json
    farm.py check   [--json]                         ssh to each host: arch, Python, RTT, 2 MiB scp
    farm.py status                                   exit 0 when the farm is up and answering
    farm.py down    [--purge]                        stop it; --purge also deletes state and the rootfs

Hosts (root logs in with the farm's ed25519 key; each has its own hostname and its own $HOME):
    plain     x86_64, the host's own userland and /usr/sbin/sshd, in its own namespace
    degraded  like plain behind a bad link: tbf rate cap both ways, random loss (nftables), and
              added latency from farm_proxy.py, which listens on the host's address inside the
              namespace and forwards to sshd on the namespace's loopback
    arm64     aarch64 Debian rootfs (aarch64_rootfs.sh) under qemu-user: `uname -m` says aarch64

Everything lives under the state dir (keys, configs, logs, farm.json, ssh_config, known_hosts) and
the names derived from the prefix (netns PREFIX-NAME, links PREFIX-br and PREFIX-<host>), which is all
`down` touches. Settings come from options or the environment (EDGEQ_FARM_*; see --help).
Run as root. Standard library only.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import hashlib
import ipaddress
import json
import os
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import sshd_conf  # noqa: E402

SCHEMA = "edgeq.farm/1"
STATE_MARKER = ".edgeq-farm-state"
ROOTFS_STAMP = ".edgeq-rootfs-stamp"
SSH_PORT = 22
EGRESS_PORT = 3128


@dataclass(frozen=True)
class HostSpec:
    name: str
    index: int  # last octet of its address
    arch: str
    link: str  # suffix of the host-side veth name (interface names are at most 15 characters)


HOSTS = {
    "plain": HostSpec("plain", 11, "x86_64", "plain"),
    "degraded": HostSpec("degraded", 12, "x86_64", "degr"),
    "arm64": HostSpec("arm64", 13, "aarch64", "arm64"),
}
# More plain x86 hosts for farms of N boards: node1 .. node60 at .21 .. .80.
MAX_NODES = 60


def host_spec(name: str) -> HostSpec:
    if name in HOSTS:
        return HOSTS[name]
    if name.startswith("node") and name[4:].isdigit() and 1 <= int(name[4:]) <= MAX_NODES and name[4] != "0":
        n = int(name[4:])
        return HostSpec(name, 20 + n, "x86_64", name)
    raise FarmError(f"unknown host {name!r}: choose from {', '.join(HOSTS)}, node1 .. node{MAX_NODES}")


def all_host_names() -> list[str]:
    return [*HOSTS, *(f"node{n}" for n in range(1, MAX_NODES + 1))]


class FarmError(Exception):
    """Something the user can fix; printed as one line, exit code 2."""


@dataclass(frozen=True)
class Config:
    state: Path
    rootfs: Path
    prefix: str
    net: ipaddress.IPv4Network
    hosts: tuple[str, ...]
    delay_ms: float
    rate: str
    loss_pct: int
    egress: bool
    egress_allow: tuple[str, ...]

    def addr(self, index: int) -> str:
        return str(self.net.network_address + index)

    @property
    def gateway(self) -> str:
        return self.addr(1)

    @property
    def bridge(self) -> str:
        return f"{self.prefix}-br"

    def netns(self, name: str) -> str:
        return f"{self.prefix}-{name}"

    def veth(self, name: str) -> str:
        return f"{self.prefix}-{host_spec(name).link}"

    def host_dir(self, name: str) -> Path:
        return self.state / "hosts" / name

    @property
    def run_dir(self) -> Path:
        return self.state / "run"

    @property
    def identity(self) -> Path:
        return self.state / "id_ed25519"

    @property
    def farm_json(self) -> Path:
        return self.state / "farm.json"


# ----------------------------------------------------------------------------------------- helpers


def say(msg: str) -> None:
    print(f"[farm] {msg}", file=sys.stderr, flush=True)


def sh(
    argv: list[str], ns: str | None = None, check: bool = True, input: str | None = None, capture: bool = True
) -> subprocess.CompletedProcess[str]:
    """Run a command (in network namespace `ns` if given); raise FarmError with its stderr on failure."""
    if ns:
        argv = ["ip", "netns", "exec", ns, *argv]
    proc = subprocess.run(
        argv,
        input=input,
        text=True,
        capture_output=capture,
        stdin=None if input is not None else subprocess.DEVNULL,
    )
    if check and proc.returncode != 0:
        detail = (proc.stderr or proc.stdout or "").strip().splitlines()
        raise FarmError(f"{shlex.join(argv)} failed ({proc.returncode}): {detail[-1] if detail else ''}")
    return proc


def write_atomic(path: Path, text: str, mode: int = 0o644) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.chmod(tmp, mode)
    os.replace(tmp, path)


def link_exists(name: str) -> bool:
    return Path("/sys/class/net", name).exists()


def netns_exists(name: str) -> bool:
    return Path("/run/netns", name).exists()


def proc_start_time(pid: int) -> str | None:
    """Kernel start time of a live process: with the pid it identifies the process (pids get reused)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()
    # A zombie has exited already; it lingers until PID 1 reaps it, which can take seconds here.
    return None if fields[0] in ("Z", "X") else fields[19]


def ssh_banner(addr: str, port: int, timeout: float) -> bool:
    try:
        with socket.create_connection((addr, port), timeout=timeout) as s:
            s.settimeout(timeout)
            return s.recv(64).startswith(b"SSH-")
    except OSError:
        return False


def key_fingerprint(pub_line: str) -> str:
    blob = base64.b64decode(pub_line.split()[1])
    return "SHA256:" + base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")


# ------------------------------------------------------------------------------------ host setup


def ensure_host_tools() -> None:
    need = {
        "/usr/sbin/sshd": "openssh-server",
        "ssh": "openssh-client",
        "scp": "openssh-client",
        "ssh-keygen": "openssh-client",
        "nft": "nftables",
        "tc": "iproute2",
        "ip": "iproute2",
        "unshare": "util-linux",
    }
    missing = sorted({pkg for tool, pkg in need.items() if not shutil.which(tool)})
    # The x86 board venv is made by Debian's Python, whose venv needs ensurepip (python3-venv).
    venv_ok = (
        subprocess.run(["/usr/bin/python3", "-c", "import ensurepip, venv"], capture_output=True).returncode
        == 0
    )
    if not venv_ok:
        missing.append("python3-venv")
    if not missing:
        return
    say(f"installing {' '.join(missing)}")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    opts = ["-y", "-q", "-o", "DPkg::Lock::Timeout=600"]
    for argv in (
        ["apt-get", *opts, "update"],
        ["apt-get", *opts, "install", "--no-install-recommends", *missing],
    ):
        proc = subprocess.run(argv, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True)
        if proc.returncode != 0:
            raise FarmError(f"{shlex.join(argv)} failed: {proc.stderr.strip()[-300:]}")


def ensure_rootfs(cfg: Config) -> None:
    """Build the arm64 rootfs if not cached; also (re)registers binfmt, which a reboot forgets."""
    proc = subprocess.run(
        ["bash", str(HERE / "aarch64_rootfs.sh"), str(cfg.rootfs)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
    )
    if proc.returncode != 0:
        raise FarmError(f"aarch64_rootfs.sh {cfg.rootfs} failed (exit {proc.returncode})")


# The x86 hosts' board Python: Debian's /usr/bin/python3 (visible inside every x86 host, unlike a
# Python under /root) in a venv with the runtime the generic-x86_64 profile pins. Built once, cached.
BOARD_VENV_RECIPE = "edgeq-farm-board-venv/1 /usr/bin/python3 ai-edge-litert==2.3.0 numpy<3"
BOARD_VENV_PACKAGES = ["ai-edge-litert==2.3.0", "numpy<3"]


def board_venv(cfg: Config) -> Path:
    return cfg.rootfs.parent / "venv-x86_64"


def board_python(cfg: Config) -> Path:
    return board_venv(cfg) / "bin" / "python"


def ensure_board_venv(cfg: Config) -> None:
    """Build the x86 hosts' runner venv if not cached; it counts as built once its stamp is written
    (last), so a half-built one is started over."""
    venv = board_venv(cfg)
    stamp = venv / ".edgeq-board-venv-stamp"
    if stamp.exists() and stamp.read_text().strip() == BOARD_VENV_RECIPE and board_python(cfg).exists():
        return
    if not Path("/usr/bin/python3").exists():
        raise FarmError("/usr/bin/python3 is missing: apt-get install python3 python3-venv")
    shutil.rmtree(venv, ignore_errors=True)
    say(f"building the x86 board venv {venv} (ai-edge-litert, NumPy; once)")
    # Built where it will live: a venv's scripts name their interpreter by absolute path.
    venv.parent.mkdir(parents=True, exist_ok=True)
    sh(["/usr/bin/python3", "-m", "venv", str(venv)])
    sh([str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "--disable-pip-version-check",
        *BOARD_VENV_PACKAGES])  # fmt: skip
    sh([str(venv / "bin" / "python"), "-c", "import numpy, ai_edge_litert.interpreter"])
    write_atomic(stamp, BOARD_VENV_RECIPE + "\n")


def check_subnet_free(cfg: Config) -> None:
    ours = {cfg.bridge, *(cfg.veth(n) for n in all_host_names())}
    for entry in json.loads(sh(["ip", "-j", "-4", "addr", "show"]).stdout or "[]"):
        for a in entry.get("addr_info", []):
            if entry["ifname"] not in ours and ipaddress.ip_address(a["local"]) in cfg.net:
                raise FarmError(
                    f"{cfg.net} is already used by {entry['ifname']} ({a['local']}): "
                    "set EDGEQ_FARM_SUBNET to a free private /24"
                )
    for r in json.loads(sh(["ip", "-j", "-4", "route", "show"]).stdout or "[]"):
        dst = r.get("dst", "")
        if (
            dst
            and dst != "default"
            and r.get("dev") not in ours
            and ipaddress.ip_network(dst, strict=False).overlaps(cfg.net)
        ):
            raise FarmError(f"{cfg.net} overlaps route {dst} via {r.get('dev')}: set EDGEQ_FARM_SUBNET")


def keygen(path: Path, comment: str) -> None:
    if path.exists() and path.with_suffix(".pub").exists():
        return
    path.unlink(missing_ok=True)
    sh(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)])


def setup_network(cfg: Config) -> None:
    sh(["ip", "link", "add", cfg.bridge, "type", "bridge"])
    sh(["ip", "addr", "add", f"{cfg.gateway}/{cfg.net.prefixlen}", "dev", cfg.bridge])
    Path(f"/proc/sys/net/ipv6/conf/{cfg.bridge}/disable_ipv6").write_text("1")
    sh(["ip", "link", "set", cfg.bridge, "up"])
    for name in cfg.hosts:
        ns, veth = cfg.netns(name), cfg.veth(name)
        sh(["ip", "netns", "add", ns])
        sh(["ip", "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", ns])
        Path(f"/proc/sys/net/ipv6/conf/{veth}/disable_ipv6").write_text("1")
        sh(["ip", "link", "set", veth, "master", cfg.bridge, "up"])
        sh(["ip", "link", "set", "lo", "up"], ns=ns)
        sh(
            ["ip", "addr", "add", f"{cfg.addr(host_spec(name).index)}/{cfg.net.prefixlen}", "dev", "eth0"],
            ns=ns,
        )
        sh(["ip", "link", "set", "eth0", "up"], ns=ns)
    if "degraded" in cfg.hosts:
        degrade_link(cfg)


def degrade_link(cfg: Config) -> None:
    ns = cfg.netns("degraded")
    tbf = ["tbf", "rate", cfg.rate, "burst", "32kb", "latency", "100ms"]
    # Both directions: egress of the board, and egress of the bridge port towards it (its ingress).
    sh(["tc", "qdisc", "replace", "dev", "eth0", "root", *tbf], ns=ns)
    sh(["tc", "qdisc", "replace", "dev", cfg.veth("degraded"), "root", *tbf])
    if cfg.loss_pct > 0:
        loss = f"numgen random mod 100 < {cfg.loss_pct} drop"
        rules = f"""table inet edgeq_farm_loss {{
    chain input {{ type filter hook input priority 0; policy accept; iifname "eth0" {loss}; }}
    chain output {{ type filter hook output priority 0; policy accept; oifname "eth0" {loss}; }}
}}
"""
        sh(["nft", "-f", "-"], ns=ns, input=rules)


def spawn(cfg: Config, key: str, argv: list[str]) -> None:
    """Start a long-running process in its own session, recording pid and start time for `down`."""
    cfg.run_dir.mkdir(parents=True, exist_ok=True)
    log = open(cfg.run_dir / f"{key}.log", "ab")  # noqa: SIM115 - handed to the child
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True)
    log.close()
    start = None
    for _ in range(50):
        start = proc_start_time(proc.pid)
        if start:
            break
        time.sleep(0.01)
    write_atomic(cfg.run_dir / f"{key}.pid", f"{proc.pid} {start}\n")


def start_egress_proxy(cfg: Config) -> None:
    argv = [
        sys.executable,
        str(HERE / "farm_proxy.py"),
        "connect",
        "--listen",
        f"{cfg.gateway}:{EGRESS_PORT}",
        "--clients",
        str(cfg.net),
    ]
    for item in cfg.egress_allow:
        argv += ["--allow", item]
    spawn(cfg, "egress", argv)


def session_env(cfg: Config) -> dict[str, str]:
    if not cfg.egress:
        return {}
    proxy = f"http://{cfg.gateway}:{EGRESS_PORT}"
    no_proxy = f"localhost,127.0.0.1,{cfg.net}"
    return {"https_proxy": proxy, "HTTPS_PROXY": proxy, "no_proxy": no_proxy, "NO_PROXY": no_proxy}


def prepare_host_files(cfg: Config, name: str) -> None:
    d = cfg.host_dir(name)
    (d / "home").mkdir(parents=True, exist_ok=True)
    os.chmod(d / "home", 0o700)
    keygen(d / "ssh_host_ed25519_key", f"edgeq-farm-{name}")
    shutil.copyfile(cfg.identity.with_suffix(".pub"), d / "authorized_keys")
    # arm64's sshd runs in the chroot and sees this directory at /run/edgeq-farm.
    inside = Path("/run/edgeq-farm") if name == "arm64" else d
    addr = "127.0.0.1" if name == "degraded" else cfg.addr(host_spec(name).index)
    text = sshd_conf.render(
        listen=[(addr, SSH_PORT)],
        host_keys=[str(inside / "ssh_host_ed25519_key")],
        authorized_keys=str(inside / "authorized_keys"),
        set_env=session_env(cfg),
    )
    sshd_conf.write(str(d / "sshd_config"), text)


def start_host(cfg: Config, name: str) -> None:
    d, q = cfg.host_dir(name), shlex.quote
    hostname = f"edgeq-{name}"
    if name == "arm64":
        r = q(str(cfg.rootfs))
        # Everything below is mounted in a private mount namespace that dies with sshd: the cached
        # rootfs gets no mounts on the host and keeps no /tmp between farms.
        script = "\n".join(
            [
                "set -e",
                f"hostname {hostname}",
                f"mount -t tmpfs -o mode=755,size=64m tmpfs {r}/run",
                f"mkdir -p {r}/run/sshd {r}/run/edgeq-farm",
                f"mount --bind {q(str(d))} {r}/run/edgeq-farm",
                f"mount --bind {q(str(d / 'home'))} {r}/root",
                f"mount -t proc proc {r}/proc",
                f"mount --rbind /dev {r}/dev",
                f"mount --rbind /sys {r}/sys",
                f"mount -t tmpfs -o mode=1777 tmpfs {r}/tmp",
                f"exec chroot {r} /usr/sbin/sshd -D -e -f /run/edgeq-farm/sshd_config",
            ]
        )
    else:
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # sshd's privilege-separation directory
        # A private $HOME per board: two boards deploying to ~/ must not share one directory.
        script = "\n".join(
            [
                "set -e",
                f"hostname {hostname}",
                f"mount --bind {q(str(d / 'home'))} /root",
                f"exec /usr/sbin/sshd -D -e -f {q(str(d / 'sshd_config'))}",
            ]
        )
    spawn(
        cfg,
        f"{name}.sshd",
        [
            "ip",
            "netns",
            "exec",
            cfg.netns(name),
            "unshare",
            "--mount",
            "--uts",
            "--fork",
            "--kill-child",
            "--",
            "sh",
            "-c",
            script,
        ],
    )
    if name == "degraded":
        spawn(
            cfg,
            "degraded.proxy",
            [
                "ip",
                "netns",
                "exec",
                cfg.netns(name),
                sys.executable,
                str(HERE / "farm_proxy.py"),
                "delay",
                "--listen",
                f"{cfg.addr(host_spec(name).index)}:{SSH_PORT}",
                "--target",
                f"127.0.0.1:{SSH_PORT}",
                "--delay-ms",
                str(cfg.delay_ms),
            ],
        )


def wait_ready(cfg: Config, timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    pending = list(cfg.hosts)
    while pending:
        pending = [n for n in pending if not ssh_banner(cfg.addr(host_spec(n).index), SSH_PORT, 3.0)]
        if not pending:
            return
        dead = [k for k in pid_keys(cfg) if not pid_alive(cfg, k)]
        if dead or time.monotonic() > deadline:
            logs = {k: (cfg.run_dir / f"{k}.log").read_text(errors="replace")[-400:] for k in dead}
            raise FarmError(f"hosts not answering: {pending}; exited: {dead}; logs: {logs}")
        time.sleep(0.3)


def host_record(cfg: Config, name: str) -> dict[str, object]:
    spec = host_spec(name)
    addr = cfg.addr(spec.index)
    pub = (cfg.host_dir(name) / "ssh_host_ed25519_key.pub").read_text().split()
    host_key = f"{pub[0]} {pub[1]}"
    link: dict[str, object] = {"rate": None, "loss_pct": 0, "delay_ms": 0}
    if name == "degraded":
        link = {"rate": cfg.rate, "loss_pct": cfg.loss_pct, "delay_ms": cfg.delay_ms}
    return {
        "name": name,
        "address": addr,
        "port": SSH_PORT,
        "user": "root",
        "identity_file": str(cfg.identity),
        "known_hosts": str(cfg.state / "known_hosts"),
        "known_hosts_line": f"{addr if SSH_PORT == 22 else f'[{addr}]:{SSH_PORT}'} {host_key}",
        "host_key": host_key,
        "host_key_fingerprint": key_fingerprint(host_key),
        "arch": spec.arch,
        # the runner's Python: the shared board venv on x86 hosts; arm64 gets its own (devices setup)
        "python": str(board_python(cfg)) if spec.arch == "x86_64" else None,
        "hostname": f"edgeq-{name}",
        "netns": cfg.netns(name),
        "link": link,
    }


def write_client_files(cfg: Config) -> dict[str, Any]:
    hosts = [host_record(cfg, n) for n in cfg.hosts]
    write_atomic(cfg.state / "known_hosts", "".join(f"{h['known_hosts_line']}\n" for h in hosts))
    blocks = []
    for h in hosts:
        blocks.append(
            "\n".join(
                [
                    f"Host {h['name']}",
                    f"    HostName {h['address']}",
                    f"    Port {h['port']}",
                    f"    User {h['user']}",
                    f"    IdentityFile {cfg.identity}",
                    "    IdentitiesOnly yes",
                    f"    UserKnownHostsFile {cfg.state / 'known_hosts'}",
                    "    GlobalKnownHostsFile /dev/null",
                    "    StrictHostKeyChecking yes",
                    "    BatchMode yes",
                    "    ConnectTimeout 60",
                    "    LogLevel ERROR",
                ]
            )
        )
    write_atomic(cfg.state / "ssh_config", "\n\n".join(blocks) + "\n")
    farm: dict[str, Any] = {
        "schema": SCHEMA,
        "state_dir": str(cfg.state),
        "subnet": str(cfg.net),
        "gateway": cfg.gateway,
        "identity_file": str(cfg.identity),
        "known_hosts": str(cfg.state / "known_hosts"),
        "ssh_config": str(cfg.state / "ssh_config"),
        "egress_proxy": f"http://{cfg.gateway}:{EGRESS_PORT}" if cfg.egress else None,
        "rootfs": str(cfg.rootfs) if "arm64" in cfg.hosts else None,
        "hosts": hosts,
    }
    write_atomic(cfg.farm_json, json.dumps(farm, indent=2) + "\n")
    return farm


# ------------------------------------------------------------------------------------- processes


def pid_keys(cfg: Config) -> list[str]:
    return sorted(p.name[: -len(".pid")] for p in cfg.run_dir.glob("*.pid")) if cfg.run_dir.is_dir() else []


def read_pid(cfg: Config, key: str) -> tuple[int, str] | None:
    try:
        pid, start = (cfg.run_dir / f"{key}.pid").read_text().split()
        return int(pid), start
    except (OSError, ValueError):
        return None


def pid_alive(cfg: Config, key: str) -> bool:
    rec = read_pid(cfg, key)
    return rec is not None and proc_start_time(rec[0]) == rec[1]


def stop_process(cfg: Config, key: str) -> None:
    rec = read_pid(cfg, key)
    if rec and proc_start_time(rec[0]) == rec[1]:
        pid = rec[0]
        # The process leads its own session (spawn), so its group is exactly what we started.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGTERM)
        for _ in range(50):
            if proc_start_time(pid) != rec[1]:
                break
            time.sleep(0.1)
        else:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)
    (cfg.run_dir / f"{key}.pid").unlink(missing_ok=True)


def kill_netns_processes(ns: str) -> None:
    """Whatever still runs in a namespace we made (ssh sessions, their children) goes with it."""
    for _ in range(3):
        pids = [int(p) for p in sh(["ip", "netns", "pids", ns], check=False).stdout.split()]
        if not pids:
            return
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.2)


# -------------------------------------------------------------------------------------- commands


def is_up(cfg: Config) -> bool:
    try:
        farm = json.loads(cfg.farm_json.read_text())
    except (OSError, ValueError):
        return False
    names = [h["name"] for h in farm.get("hosts", [])]
    if names != list(cfg.hosts) or farm.get("subnet") != str(cfg.net):
        return False
    keys = [f"{n}.sshd" for n in cfg.hosts] + (["degraded.proxy"] if "degraded" in cfg.hosts else [])
    keys += ["egress"] if cfg.egress else []
    if not all(pid_alive(cfg, k) for k in keys):
        return False
    return all(ssh_banner(cfg.addr(host_spec(n).index), SSH_PORT, 10.0) for n in cfg.hosts)


def cmd_up(cfg: Config) -> int:
    t0 = time.monotonic()
    if cfg.state == Path("/root") or Path("/root") in cfg.state.parents:
        raise FarmError(
            f"state dir {cfg.state} is under /root, which each board replaces with its own "
            "home: choose another (EDGEQ_FARM_STATE)"
        )
    ensure_host_tools()
    if "arm64" in cfg.hosts:
        ensure_rootfs(cfg)
    if any(host_spec(n).arch == "x86_64" for n in cfg.hosts):
        ensure_board_venv(cfg)
    if is_up(cfg):
        write_client_files(cfg)  # same hosts and keys; picks up fields a newer farm.py records
        say(f"already up ({cfg.farm_json})")
        print(cfg.farm_json.read_text(), end="")
        return 0
    teardown(cfg, quiet=True)  # whatever a crashed or different farm left under our names
    check_subnet_free(cfg)
    cfg.state.mkdir(parents=True, exist_ok=True)
    (cfg.state / STATE_MARKER).touch()
    keygen(cfg.identity, "edgeq-farm")
    for name in cfg.hosts:
        prepare_host_files(cfg, name)
    try:
        setup_network(cfg)
        if cfg.egress:
            start_egress_proxy(cfg)
        for name in cfg.hosts:
            start_host(cfg, name)
        wait_ready(cfg)
    except BaseException:
        teardown(cfg, quiet=True)
        raise
    farm = write_client_files(cfg)
    say(
        f"up in {time.monotonic() - t0:.1f} s: "
        + ", ".join(f"{h['name']}={h['address']}:{h['port']}" for h in farm["hosts"])
    )
    say(f"try: ssh -F {cfg.state / 'ssh_config'} arm64 uname -m")
    print(cfg.farm_json.read_text(), end="")
    return 0


def teardown(cfg: Config, quiet: bool = False) -> None:
    for key in pid_keys(cfg):
        t = time.monotonic()
        stop_process(cfg, key)
        if os.environ.get("EDGEQ_FARM_DEBUG"):
            say(f"stopped {key} in {time.monotonic() - t:.2f} s")
    for name in all_host_names():
        ns = cfg.netns(name)
        if netns_exists(ns):
            kill_netns_processes(ns)
            sh(["ip", "netns", "del", ns])  # takes its eth0, qdiscs and nft tables with it
            if not quiet:
                say(f"deleted netns {ns}")
        # Deleting the namespace deletes the veth pair, asynchronously: tolerate it vanishing meanwhile.
        if link_exists(cfg.veth(name)):
            sh(["ip", "link", "del", cfg.veth(name)], check=False)
    if link_exists(cfg.bridge):
        sh(["ip", "link", "del", cfg.bridge])
        if not quiet:
            say(f"deleted bridge {cfg.bridge}")
    cfg.farm_json.unlink(missing_ok=True)


def cmd_down(cfg: Config, purge: bool) -> int:
    t0 = time.monotonic()
    teardown(cfg)
    if purge:
        if (cfg.state / STATE_MARKER).exists():
            shutil.rmtree(cfg.state)
            say(f"removed {cfg.state}")
        if (cfg.rootfs / ROOTFS_STAMP).exists():
            if any(f" {cfg.rootfs}/" in line for line in Path("/proc/mounts").read_text().splitlines()):
                raise FarmError(f"something is mounted under {cfg.rootfs}: not removing it")
            subprocess.run(["rm", "-rf", "--one-file-system", str(cfg.rootfs)], check=True)
            Path(f"{cfg.rootfs}.build.log").unlink(missing_ok=True)
            say(f"removed {cfg.rootfs}")
    say(f"down in {time.monotonic() - t0:.1f} s")
    return 0


def cmd_status(cfg: Config) -> int:
    if is_up(cfg):
        print(cfg.farm_json.read_text(), end="")
        return 0
    say("not up")
    return 1


def cmd_check(cfg: Config, as_json: bool, rtt_samples: int = 20, size: int = 2 * 1024 * 1024) -> int:
    try:
        farm = json.loads(cfg.farm_json.read_text())
    except OSError as e:
        raise FarmError(f"no farm at {cfg.state} ({e}): run up.sh first") from e
    ssh_config = farm["ssh_config"]
    results: list[dict[str, Any]] = []
    failed = False
    with tempfile.TemporaryDirectory(prefix="edgeq-farm-check.") as tmp:
        payload = Path(tmp, "payload.bin")
        payload.write_bytes(os.urandom(size))
        digest = hashlib.sha256(payload.read_bytes()).hexdigest()
        for host in farm["hosts"]:
            name = host["name"]
            try:
                results.append(check_host(ssh_config, host, Path(tmp), payload, digest, rtt_samples))
            except (FarmError, subprocess.SubprocessError, OSError) as e:
                failed = True
                results.append({"name": name, "ok": False, "error": str(e)})
    if as_json:
        print(json.dumps({"schema": "edgeq.farm-check/1", "hosts": results}, indent=2))
    else:
        print(
            f"{'host':<9} {'arch':<8} {'python':<8} {'hostname':<15} {'connect_s':>9} "
            f"{'rtt_ms p50/p90':>15} {'up_MiB/s':>9} {'down_MiB/s':>10}"
        )
        for r in results:
            if not r.get("ok"):
                print(f"{r['name']:<9} FAILED: {r['error']}")
                continue
            print(
                f"{r['name']:<9} {r['arch']:<8} {r['python']:<8} {r['hostname']:<15} {r['connect_s']:>9.2f} "
                f"{r['rtt_ms_p50']:>7.1f}/{r['rtt_ms_p90']:<7.1f} {r['upload_MiB_s']:>9.2f} "
                f"{r['download_MiB_s']:>10.2f}"
            )
    by = {r["name"]: r for r in results if r.get("ok")}
    if "plain" in by and "degraded" in by:
        p, d = by["plain"], by["degraded"]
        worse = d["rtt_ms_p50"] > p["rtt_ms_p50"] and d["upload_MiB_s"] < p["upload_MiB_s"]
        say(
            f"degraded vs plain: rtt {d['rtt_ms_p50']:.1f} vs {p['rtt_ms_p50']:.1f} ms, upload "
            f"{d['upload_MiB_s']:.2f} vs {p['upload_MiB_s']:.2f} MiB/s"
            + ("" if worse else "  WARNING: the degraded link does not look degraded")
        )
    for r in results:
        if r.get("ok") and r["arch"] != r["expected_arch"]:
            say(f"{r['name']}: uname -m says {r['arch']}, expected {r['expected_arch']}")
            failed = True
    return 1 if failed else 0


def check_host(
    ssh_config: str, host: dict[str, str], tmp: Path, payload: Path, digest: str, rtt_samples: int
) -> dict[str, Any]:
    name = host["name"]
    base = ["-F", ssh_config]
    t = time.monotonic()
    probe = subprocess.run(
        ["ssh", *base, name, "uname -m; hostname; python3 -c 'import sys; print(sys.version.split()[0])'"],
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
    )
    connect_s = time.monotonic() - t
    if probe.returncode != 0:
        raise FarmError(f"ssh {name} failed ({probe.returncode}): {probe.stderr.strip()}")
    arch, hostname, python = [*probe.stdout.split(), "?", "?", "?"][:3]

    # One multiplexed connection for the rest, so the figures are the link's, not the handshake's.
    control = str(tmp / f"{name}.ctl")
    mux = ["-o", f"ControlPath={control}"]
    master = subprocess.Popen(
        ["ssh", *base, *mux, "-o", "ControlMaster=yes", "-N", name],
        stdin=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 120
        while subprocess.run(["ssh", *base, *mux, "-O", "check", name], capture_output=True).returncode != 0:
            if master.poll() is not None or time.monotonic() > deadline:
                raise FarmError(f"ssh control master to {name} did not start")
            time.sleep(0.2)

        # Application-level round trip: one line through `cat` on the host and back.
        echo = subprocess.Popen(
            ["ssh", *base, *mux, name, "cat"], stdin=subprocess.PIPE, stdout=subprocess.PIPE
        )
        assert echo.stdin and echo.stdout
        rtts = []
        for i in range(rtt_samples + 2):
            t = time.monotonic()
            echo.stdin.write(b"ping\n")
            echo.stdin.flush()
            if echo.stdout.readline() != b"ping\n":
                raise FarmError(f"echo through {name} broke")
            if i >= 2:  # the first round trips include starting cat (slow under emulation)
                rtts.append((time.monotonic() - t) * 1000)
        echo.stdin.close()
        echo.wait(timeout=60)
        rtts.sort()

        remote = f"{name}:/tmp/edgeq-farm-check.bin"
        t = time.monotonic()
        subprocess.run(["scp", *base, *mux, "-q", str(payload), remote], check=True, timeout=600)
        up_s = time.monotonic() - t
        back = tmp / f"{name}.back"
        t = time.monotonic()
        subprocess.run(["scp", *base, *mux, "-q", remote, str(back)], check=True, timeout=600)
        down_s = time.monotonic() - t
        subprocess.run(["ssh", *base, *mux, name, "rm -f /tmp/edgeq-farm-check.bin"], check=True, timeout=120)
        if hashlib.sha256(back.read_bytes()).hexdigest() != digest:
            raise FarmError(f"the file copied to and back from {name} differs")
    finally:
        subprocess.run(["ssh", *base, *mux, "-O", "exit", name], capture_output=True)
        with contextlib.suppress(subprocess.TimeoutExpired):
            master.wait(timeout=10)
        if master.poll() is None:
            master.kill()
    mib = payload.stat().st_size / (1024 * 1024)
    return {
        "name": name,
        "ok": True,
        "arch": arch,
        "expected_arch": host["arch"],
        "hostname": hostname,
        "python": python,
        "connect_s": round(connect_s, 3),
        "rtt_ms_p50": round(statistics.median(rtts), 2),
        "rtt_ms_p90": round(rtts[int(0.9 * (len(rtts) - 1))], 2),
        "upload_MiB_s": round(mib / up_s, 3),
        "download_MiB_s": round(mib / down_s, 3),
        "upload_s": round(up_s, 3),
        "download_s": round(down_s, 3),
        "size_bytes": payload.stat().st_size,
    }


# ------------------------------------------------------------------------------------------- cli


def parse_args(argv: list[str]) -> tuple[argparse.Namespace, Config]:
    env = os.environ.get
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("command", choices=["up", "down", "check", "status"])
    p.add_argument(
        "--state",
        default=env("EDGEQ_FARM_STATE", "/var/lib/edgeq-farm"),
        help="state dir (EDGEQ_FARM_STATE, default /var/lib/edgeq-farm)",
    )
    p.add_argument(
        "--rootfs",
        default=env("EDGEQ_FARM_ROOTFS", "/var/cache/edgeq-farm/rootfs-arm64"),
        help="arm64 rootfs (EDGEQ_FARM_ROOTFS)",
    )
    p.add_argument(
        "--prefix",
        default=env("EDGEQ_FARM_PREFIX", "eqf"),
        help="prefix of netns and link names (EDGEQ_FARM_PREFIX, default eqf)",
    )
    p.add_argument(
        "--subnet",
        default=env("EDGEQ_FARM_SUBNET", "10.213.7.0/24"),
        help="private /24 used only inside the farm (EDGEQ_FARM_SUBNET)",
    )
    p.add_argument(
        "--hosts",
        default=env("EDGEQ_FARM_HOSTS", "plain,degraded,arm64,node1"),
        help="which hosts (EDGEQ_FARM_HOSTS): plain, degraded, arm64, node1 .. node60 (plain x86 hosts)",
    )
    p.add_argument(
        "--delay-ms",
        type=float,
        default=float(env("EDGEQ_FARM_DELAY_MS", "40")),
        help="degraded: added delay each way (EDGEQ_FARM_DELAY_MS, default 40)",
    )
    p.add_argument(
        "--rate",
        default=env("EDGEQ_FARM_RATE", "8mbit"),
        help="degraded: tbf rate each way (EDGEQ_FARM_RATE, default 8mbit)",
    )
    p.add_argument(
        "--loss-pct",
        type=int,
        default=int(env("EDGEQ_FARM_LOSS_PCT", "1")),
        help="degraded: random packet loss each way (EDGEQ_FARM_LOSS_PCT, default 1)",
    )
    p.add_argument(
        "--no-egress",
        action="store_true",
        default=env("EDGEQ_FARM_EGRESS", "1") == "0",
        help="no CONNECT proxy to PyPI for the boards (EDGEQ_FARM_EGRESS=0)",
    )
    p.add_argument(
        "--egress-allow",
        default=env("EDGEQ_FARM_EGRESS_ALLOW", "pypi.org:443,files.pythonhosted.org:443"),
        help="HOST:PORT list the boards may reach (EDGEQ_FARM_EGRESS_ALLOW)",
    )
    p.add_argument("--purge", action="store_true", help="down: also delete the state dir and the rootfs")
    p.add_argument("--json", action="store_true", help="check: print JSON only")
    args = p.parse_args(argv)

    wanted = [h for h in args.hosts.split(",") if h]
    for h in wanted:
        host_spec(h)  # unknown names fail here
    hosts = tuple(h for h in all_host_names() if h in wanted)
    if not hosts:
        raise FarmError(f"no hosts given: choose from {', '.join(HOSTS)}, node1 .. node{MAX_NODES}")
    if not (1 <= len(args.prefix) <= 8 and args.prefix.replace("-", "").isalnum()):
        raise FarmError(f"prefix {args.prefix!r}: 1-8 letters, digits or '-' (interface names are short)")
    net = ipaddress.ip_network(args.subnet, strict=True)
    if not isinstance(net, ipaddress.IPv4Network) or net.prefixlen != 24 or not net.is_private:
        raise FarmError(f"subnet {args.subnet}: need a private IPv4 /24")
    cfg = Config(
        state=Path(args.state).resolve(),
        rootfs=Path(args.rootfs).resolve(),
        prefix=args.prefix,
        net=net,
        hosts=hosts,
        delay_ms=args.delay_ms,
        rate=args.rate,
        loss_pct=args.loss_pct,
        egress=not args.no_egress,
        egress_allow=tuple(a for a in args.egress_allow.split(",") if a),
    )
    return args, cfg


def main(argv: list[str]) -> int:
    try:
        args, cfg = parse_args(argv)
        if os.geteuid() != 0:
            raise FarmError("must run as root (namespaces, bridges, sshd)")
        if args.command == "up":
            return cmd_up(cfg)
        if args.command == "down":
            return cmd_down(cfg, args.purge)
        if args.command == "status":
            return cmd_status(cfg)
        return cmd_check(cfg, args.json)
    except FarmError as e:
        print(f"farm: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
