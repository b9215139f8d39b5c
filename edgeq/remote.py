"""Ship the runner and a model to a device, run a :class:`MeasureSpec` there, return a :class:`Result`.

The runner travels as one file, ``runner.pyz`` (:mod:`edgeq.runner_zip`). Everything goes through a :class:`~edgeq.devices.connect.DeviceSession`, so the local
device and a board over SSH run the very same code.
"""

from __future__ import annotations

import contextlib
import json
import posixpath
import tempfile
import time
import uuid
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgeq.devices.connect import DeviceSession
from edgeq.devices.deploy import Deployed, deploy_file, deploy_files, remove_remote
from edgeq.devices.transports import Transport
from edgeq.errors import DeviceError, EdgeqError, UserInputError
from edgeq.files import atomic_path, atomic_write, sha256_bytes
from edgeq.home import edgeq_home
from edgeq.runner import PREFLIGHT_SCHEMA, PROBE_SCHEMA, RESULT_SCHEMA
from edgeq.runner_zip import build_runner_pyz, zip_entry
from edgeq.spec import MeasureSpec
from edgeq.tflite import check_file

if TYPE_CHECKING:
    import numpy as np

    from edgeq.result import Result

_ARCH_ALIASES = {"arm64": "aarch64", "amd64": "x86_64", "x64": "x86_64"}
_ARCH_PROGRAM = "import platform; print(platform.machine())"

EventCallback = Callable[[dict[str, Any]], None]


def local_workdir() -> Path:
    return edgeq_home() / "devices" / "local"


# --------------------------------------------------------------------------------------------------
# test data


def check_test_data(test_data: Any) -> tuple[np.ndarray, np.ndarray]:
    import numpy as np

    try:
        x, y = test_data
    except (TypeError, ValueError):
        raise UserInputError("test data must be a pair (x, y) of arrays", "pass test_data=(x, y)") from None
    x = np.asarray(x)
    y = np.asarray(y)
    if x.ndim < 2 or y.ndim not in (1, 2) or x.shape[0] != y.shape[0] or x.shape[0] == 0:
        raise UserInputError(
            f"test data shapes do not fit: x {x.shape}, y {y.shape}",
            "x is (N, ...) features and y is (N,) integer labels for the same N > 0 samples",
        )
    if y.ndim == 1 and y.dtype.kind not in "iu":
        raise UserInputError(f"test labels must be integers, not {y.dtype}", "pass class indices as y")
    if x.dtype == np.float64:
        x = x.astype(np.float32)  # the runner quantizes in float32 like TFLite's QUANTIZE kernel
    return x, y


def write_test_data(x: np.ndarray, y: np.ndarray, dest: Path) -> None:
    """Write an .npz of ``x`` and ``y`` atomically and deterministically (same arrays, same sha256).

    np.savez stamps each entry with the current time; fixed stamps let the content-addressed deploy
    skip data the device already has.
    """
    import numpy as np

    with atomic_path(dest) as tmp, zipfile.ZipFile(tmp, "w", allowZip64=True) as zf:
        for key, array in (("x", x), ("y", y)):
            with zf.open(zip_entry(f"{key}.npy"), "w", force_zip64=True) as f:
                np.lib.format.write_array(f, np.ascontiguousarray(array), allow_pickle=False)


# --------------------------------------------------------------------------------------------------
# running the runner


class _Stream:
    """Reads the runner's JSON lines as they arrive: progress goes on, result and error are kept."""

    def __init__(self, on_event: EventCallback | None) -> None:
        self.on_event = on_event
        self.result: dict[str, Any] | None = None
        self.error: dict[str, Any] | None = None

    def __call__(self, line: str) -> None:
        text = line.strip()
        try:
            event = json.loads(text) if text.startswith("{") else None
        except ValueError:
            event = None
        if not isinstance(event, dict) or "event" not in event:
            return
        kind = event["event"]
        if kind == "result":
            self.result = event.get("result")
        elif kind == "error":
            self.error = event
        elif self.on_event is not None:
            self.on_event(event)


def _save_log(device_name: str, argv: list[str], stderr: str) -> Path | None:
    """Keep the runner's stderr (its traceback, the runtime's own messages) where the user can read it."""
    if not stderr.strip():
        return None
    stamp = time.strftime("%Y%m%d-%H%M%S")
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in device_name)[:60]
    path = edgeq_home() / "logs" / f"runner-{stamp}-{safe}-{uuid.uuid4().hex[:6]}.log"
    with contextlib.suppress(OSError):
        atomic_write(path, f"# {' '.join(argv)}\n{stderr}")
        return path
    return None


def _stderr_tail(stderr: str, lines: int = 3) -> str:
    tail = [ln.strip() for ln in stderr.strip().splitlines() if ln.strip()][-lines:]
    return " | ".join(tail)[-400:]


def run_runner(
    transport: Transport,
    argv: list[str],
    device_name: str,
    *,
    on_event: EventCallback | None = None,
    timeout: float | None = None,
    schema: str = RESULT_SCHEMA,
) -> dict[str, Any]:
    """Run the runner with ``argv`` and turn its events into a result dict or an EdgeqError.

    When the runner fails, its stderr is saved under ``$EDGEQ_HOME/logs/`` and the error names it.
    """
    stream = _Stream(on_event)
    res = transport.run(argv, timeout=timeout, on_stdout_line=stream)
    if stream.error is not None or res.exit_code != 0 or stream.result is None:
        log = _save_log(device_name, argv, res.stderr)
        saved = f"the runner's log: {log}" if log else ""
        if stream.error is not None:
            message = str(stream.error.get("message") or "the runner failed")
            hint = str(stream.error.get("hint") or "")
            if stream.error.get("kind") == "bad_input":
                raise UserInputError(message, hint)
            raise DeviceError(
                f"on device {device_name!r}: {message}", "; ".join(h for h in (hint, saved) if h)
            )
        how = f"was killed by signal {-res.exit_code}" if res.exit_code < 0 else f"exited {res.exit_code}"
        raise DeviceError(
            f"the runner on device {device_name!r} {how} without a result",
            f"its last words: {_stderr_tail(res.stderr) or '(nothing on stderr)'}"
            + (f"; {saved}" if saved else ""),
        )
    result = stream.result
    if not isinstance(result, dict) or result.get("schema") != schema:
        found = result.get("schema") if isinstance(result, dict) else type(result).__name__
        raise DeviceError(
            f"the runner on device {device_name!r} answered with schema {found!r}, expected {schema!r}",
            "the device runs a different edgeq runner: let edgeq redeploy it",
        )
    return result


def deploy(
    dev: DeviceSession,
    files: list[tuple[Path, str]],
    on_event: EventCallback | None = None,
    *,
    together: bool | set[Path] = False,
) -> list[Deployed]:
    """Deploy ``(path, kind)`` files (runner, models, lib, data) content-addressed, with one check
    program on the device for all of them; a ``deploy`` event per file."""
    deployed = deploy_files(dev.transport, dev.python, dev.workdir, files, together=together)
    if on_event is not None:
        for (path, kind), d in zip(files, deployed, strict=True):
            on_event(
                {
                    "event": "deploy",
                    "kind": kind,
                    "name": path.name,
                    "sha256": d.sha256,
                    "bytes_sent": d.bytes_sent,
                }
            )
    return deployed


def check_model(model: Path) -> Path:
    """A model file edgeq can deploy, checked on the host before any connection: a ``.tflite`` (its
    custom ops decoded) or an OpenVINO IR ``.xml`` with its ``.bin``."""
    model = Path(model)
    if model.suffix == ".xml":
        if not model.is_file():
            raise UserInputError(f"model not found: {model}", "check the path")
        model_files(model)
        return model
    check_file(model)
    model_custom_ops(model)  # a damaged custom op fails here, before anything is sent
    return model


def model_files(model: Path) -> list[Path]:
    """The files that make up a model: the ``.tflite``, or an OpenVINO IR's ``.xml`` and ``.bin``."""
    if model.suffix == ".xml":
        weights = model.with_suffix(".bin")
        if not weights.is_file():
            raise UserInputError(
                f"{model.name} is an OpenVINO IR without its weights {weights.name}",
                "keep the .bin next to the .xml (edgeq compile --delegate openvino writes both)",
            )
        return [model, weights]
    return [model]


def model_custom_ops(model: Path) -> list[str]:
    """The EDGEQ_* custom ops ``model`` uses (empty for a plain model), each op checked on the host:
    a damaged custom op is one UserInputError naming it, before anything is deployed."""
    from edgeq.runner.modelfile import ModelFileError, custom_ops, edgeq_ops

    data = Path(model).read_bytes()
    try:
        ops = edgeq_ops(custom_ops(data))
    except ModelFileError as exc:
        raise UserInputError(
            f"{Path(model).name} is a damaged TFLite model: {exc}", "export it again"
        ) from None
    if ops:
        from edgeq.ops.rewrite import read_ternary_ops

        read_ternary_ops(data)
    return ops


def device_arch(transport: Transport, python: str) -> str:
    """The device's CPU architecture as the compilers name it (``aarch64``, ``x86_64``)."""
    res = transport.run([python, "-c", _ARCH_PROGRAM], timeout=120)
    out = res.stdout.strip().splitlines()
    if res.exit_code != 0 or not out:
        raise DeviceError(
            f"cannot ask device {transport.name!r} for its architecture: {_stderr_tail(res.stderr) or 'no output'}",
            f"check that {python!r} runs on the device",
        )
    arch = out[-1].strip()
    return _ARCH_ALIASES.get(arch, arch)


def custom_ops_library(dev: DeviceSession, model: Path) -> Path | None:
    """``libedgeq_ops.so`` built for the device's architecture when ``model`` needs it, else None.

    Built (or taken from the build cache) on the host: natively, or with Debian's cross compiler.
    """
    if model.suffix == ".xml" or not model_custom_ops(model):
        return None
    from edgeq.ops.build import build_library

    return build_library(device_arch(dev.transport, dev.python))


def measure(
    dev: DeviceSession,
    model: Path,
    spec: MeasureSpec,
    *,
    test_data: tuple[np.ndarray, np.ndarray] | None = None,
    save_outputs: Path | None = None,
    on_event: EventCallback | None = None,
) -> Result:
    """Deploy what is needed and run ``spec`` on ``model`` on the device; the result, typed.

    ``on_event`` sees ``deploy`` events from the host and the runner's ``runtime``, ``progress``
    and ``warning`` events.
    """
    from edgeq.result import Hashes, Result

    model = check_model(Path(model))
    data = check_test_data(test_data) if test_data is not None else None
    if save_outputs is not None and data is None:
        raise UserInputError("--save-outputs needs test data", "pass --test-data as well")
    runner, library = build_runner_pyz(), custom_ops_library(dev, model)
    files = [(runner, "runner")] + ([(library, "lib")] if library is not None else [])
    with tempfile.TemporaryDirectory(prefix="edgeq-") as tmp:
        if data is not None:
            npz = Path(tmp) / "test-data.npz"
            write_test_data(data[0], data[1], npz)
            files.append((npz, "data"))
        parts = model_files(model)
        files += [(p, "models") for p in parts]
        done = deploy(dev, files, on_event, together=set(parts) if len(parts) > 1 else False)
    deployed_model = done[-len(parts)]
    argv = [dev.python, done[0].remote_path, "run", "--model", deployed_model.remote_path]
    if library is not None:
        argv += ["--custom-ops-lib", done[1].remote_path]
    argv += ["--spec", spec.to_json(), "--device-name", dev.profile.name]
    if data is not None:
        argv += ["--test-data", done[-1 - len(parts)].remote_path]
    remote_outputs = None
    if save_outputs is not None:
        remote_outputs = posixpath.join(dev.workdir, "outputs", f"{uuid.uuid4().hex}.npy")
        argv += ["--save-outputs", remote_outputs]
    try:
        raw = run_runner(dev.transport, argv, dev.profile.name, on_event=on_event, timeout=spec.timeout_s)
        if remote_outputs is not None and save_outputs is not None:
            with atomic_path(Path(save_outputs)) as tmp:
                dev.transport.get(remote_outputs, tmp)
    finally:
        if remote_outputs is not None:
            # Best effort: a leftover outputs file is not worth masking the real outcome.
            with contextlib.suppress(EdgeqError):
                remove_remote(dev.transport, dev.python, dev.workdir, remote_outputs)
    raw["runner"] = {"sha256": done[0].sha256}
    raw["device"].update({"profile": dev.profile.name, "profile_sha256": dev.profile.digest()})
    raw["hashes"] = Hashes(
        model=raw["model"]["sha256"],
        runner=done[0].sha256,
        profile=dev.profile.digest(),
        spec=sha256_bytes(spec.to_json().encode()),
    ).model_dump()
    return Result.from_dict(raw, f"the result from device {dev.profile.name!r}")


def preflight(dev: DeviceSession, spec: MeasureSpec, on_event: EventCallback | None = None) -> dict[str, Any]:
    """Check on the device, before a long run, that ``spec`` can run there: the runner deploys, the
    runtime and delegate load, the power sensor answers. Errors as a run would raise them; a missing
    sensor is a warning event (the measurement itself would complete without it)."""
    runner = deploy(dev, [(build_runner_pyz(), "runner")], on_event)[0]
    argv = [dev.python, runner.remote_path, "preflight", "--spec", spec.to_json()]
    answer = run_runner(dev.transport, argv, dev.profile.name, timeout=300, schema=PREFLIGHT_SCHEMA)
    for w in answer.get("warnings") or []:
        if on_event is not None:
            on_event({"event": "warning", **w})
    return answer


def probe(dev: DeviceSession, *, timeout: float | None = None) -> dict[str, Any]:
    """What the device offers (arch, OS, Python, NumPy, which runtimes import): ``edgeq.probe/1``."""
    runner = deploy_file(dev.transport, dev.python, dev.workdir, build_runner_pyz(), "runner")
    argv = [dev.python, runner.remote_path, "probe"]
    return run_runner(dev.transport, argv, dev.profile.name, timeout=timeout, schema=PROBE_SCHEMA)
