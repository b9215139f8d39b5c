"""OpenVINO's CPU device through edgeq's runner zipapp over a real SSH session on loopback: the same
bytes a board receives, run by the device's Python, with the model and the IR shipped by scp."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

from conftest import missing_prerequisite, require_module
from support_sshd import SshServer

from edgeq.placement import Coverage
from edgeq.runner_zip import build_runner_pyz

require_module("openvino")


def ssh_argv(server: SshServer, tmp: Path, program: str) -> list[str]:
    known = tmp / "known_hosts"
    known.write_text(f"[{server.host}]:{server.port} {server.host_key_pub}\n")
    return [
        program,
        *("-i", str(server.client_key), "-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes"),
        *("-o", f"UserKnownHostsFile={known}", "-o", "StrictHostKeyChecking=yes"),
    ]


def test_openvino_cpu_over_loopback_ssh(sshd: SshServer, tiny_model: Path, tmp_path: Path) -> None:
    if shutil.which("ssh") is None or shutil.which("scp") is None:
        missing_prerequisite("the OpenSSH client is not installed (apt-get install openssh-client)")
    from edgeq.delegates.openvino.compile import write_ir

    xml = write_ir(tiny_model, tmp_path / "ir")
    remote = tmp_path / "device dir"  # the device's work dir (this machine, another directory)
    ssh = [*ssh_argv(sshd, tmp_path, "ssh"), "-p", str(sshd.port), f"{sshd.user}@{sshd.host}"]
    scp = [*ssh_argv(sshd, tmp_path, "scp"), "-P", str(sshd.port)]
    subprocess.run([*ssh, f"mkdir -p '{remote}'"], check=True, timeout=60)
    files = [build_runner_pyz(tmp_path / "cache"), tiny_model, xml, xml.with_suffix(".bin")]
    subprocess.run([*scp, *map(str, files), f"{sshd.user}@{sshd.host}:{remote}/"], check=True, timeout=60)

    spec = json.dumps({"delegate": "openvino", "runtime": "openvino", "runs": 20, "warmup": 2, "threads": 1})
    command = (
        f"cd '{remote}' && '{sys.executable}' runner.pyz run --model '{tiny_model.name}' --spec '{spec}'"
    )
    proc = subprocess.run([*ssh, command], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    events = [json.loads(line) for line in proc.stdout.splitlines()]
    result = next(e["result"] for e in events if e["event"] == "result")
    assert result["device"]["runtime"] == "openvino"
    assert result["execution"]["execution_devices"] == ["CPU"]
    assert result["execution"]["threads"] == 1
    assert result["latency_us"]["n"] == 20
    cov = Coverage.from_dict(result["execution"]["placement"])
    assert cov.summary() == "3 of 3 ops on openvino, 0 on the CPU"

    # The NCS2's IR, opened by the shipped runner's own module (the run command checks for a
    # .tflite before it picks the delegate; IR through it needs that check to let .xml pass).
    program = (
        "import json, sys; sys.path.insert(0, 'runner.pyz'); "
        "from edgeq_runner.delegates.openvino import open_model; from edgeq_runner.measure_spec import MeasureSpec; "
        f"o = open_model({xml.name!r}, MeasureSpec(delegate='openvino', runtime='openvino')); "
        "print(json.dumps([o.details['model_format'], o.placement['summary']]))"
    )
    proc = subprocess.run(
        [*ssh, f"cd '{remote}' && '{sys.executable}' -c \"{program}\""],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert json.loads(proc.stdout.splitlines()[-1]) == ["ir", "3 of 3 ops on openvino, 0 on the CPU"]

    # A device without the requested accelerator: one error event naming what OpenVINO sees.
    spec = json.dumps({"delegate": "openvino", "runtime": "openvino", "delegate_options": {"device": "NPU"}})
    command = (
        f"cd '{remote}' && '{sys.executable}' runner.pyz run --model '{tiny_model.name}' --spec '{spec}'"
    )
    proc = subprocess.run([*ssh, command], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 3
    error = [json.loads(line) for line in proc.stdout.splitlines()][-1]
    assert error["event"] == "error" and error["kind"] == "runtime_failure"
    assert error["message"] == "OpenVINO device NPU is not available here (OpenVINO 2026.4.1 sees: CPU)"
