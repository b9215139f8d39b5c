"""The runner's command line: ``run`` (measure a model as a MeasureSpec says) and ``probe``.

python runner.pyz run --model m.tflite [--spec JSON] [--test-data test.npz] [--save-outputs out.npy]
                      [--custom-ops-lib libedgeq_ops.so] [--device-name NAME]
python runner.pyz probe [--sysfs-root /sys] [--vcgencmd vcgencmd]

``--spec`` is the whole measurement (:class:`.spec.MeasureSpec` as JSON: runs, warm-up, minimum
time, threads, runtime, delegate and its options, power, thermal, what to return); settings it
leaves out take their defaults. Unknown settings, bad values and settings this runner cannot honour
are one ``bad_input`` error line.

Measurement: ``warmup`` untimed invokes, then timed invokes (perf_counter_ns around invoke() only)
until at least ``runs`` are done AND, if given, ``min_seconds`` of wall time has passed. Latency
input is random data of each input's dtype and shape (seed 0). With ``--test-data`` the samples are
then invoked one by one for top-1 accuracy (float x is quantized to an int8/uint8 input as TFLite's
QUANTIZE kernel does). With power or thermal in the spec the run is framed by sensors (see
:mod:`.session`).

A model with edgeq's custom ops (EDGEQ_TERNARY_*) runs through ai-edge-litert's libLiteRt.so with
the kernels of ``--custom-ops-lib`` registered (see :mod:`.custom`).
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import socket
import sys
import time
import traceback
from typing import Any, Dict, List, Optional

from . import (
    DELEGATE_FACTS_SCHEMA,
    PREFLIGHT_SCHEMA,
    PROBE_SCHEMA,
    RESULT_SCHEMA,
    RUNNER_VERSION,
    SENSORS_SCHEMA,
)
from .measure_spec import MeasureSpec
from .protocol import EXIT_OK, Emitter, RunnerError, one_line, protocol_stream

# ``run`` imports NumPy and the runtime where it needs them: ``probe`` and ``sensors`` must answer on a
# device that has neither yet (that is what they are asked to find out).


class _Parser(argparse.ArgumentParser):
    """Usage errors become a bad_input event instead of argparse's text and exit."""

    def error(self, message: str) -> Any:
        raise RunnerError("bad_input", "%s: %s" % (self.prog, message), "see: %s --help" % self.prog)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="runner", description="edgeq's device-side runner (JSON lines on stdout).")
    sub = parser.add_subparsers(dest="command", metavar="{run,probe}")
    sub.required = True
    run = sub.add_parser("run", help="measure a .tflite model as the spec says")
    run.add_argument("--model", required=True, help="path of the .tflite model on this device")
    run.add_argument(
        "--spec", default="{}", help="the measurement, JSON (edgeq.runner.measure_spec.MeasureSpec)"
    )
    run.add_argument("--test-data", default=None, help=".npz with x (N, ...) float32 and y (N,) labels")
    run.add_argument("--save-outputs", default=None, help=".npy for the raw outputs on the test data")
    run.add_argument(
        "--custom-ops-lib",
        default=None,
        help="libedgeq_ops.so built for this device, for models with EDGEQ_* custom ops",
    )
    run.add_argument("--device-name", default=None, help="name to record (default: the hostname)")
    sub.add_parser("probe", help="print what this device offers: arch, OS, Python, runtimes")
    facts = sub.add_parser("delegate-facts", help="print what this device offers a delegate")
    facts.add_argument("--delegate", required=True, help="none, xnnpack, edgetpu or openvino")
    pre = sub.add_parser("preflight", help="check that a spec can run here (runtime, delegate, sensor)")
    pre.add_argument("--spec", default="{}", help="the measurement, JSON")
    sensors = sub.add_parser(
        "sensors", help="print which power sensors, thermal zones and governors are here"
    )
    sensors.add_argument("--sysfs-root", default="/sys", help="where sensors are read")
    sensors.add_argument("--vcgencmd", default="vcgencmd", help="the vcgencmd program (Raspberry Pi)")
    sensors.add_argument("--power-config", default=None, help="a power config (JSON) to check as configured")
    return parser


def _numpy_version() -> Optional[str]:
    try:
        import numpy
    except ImportError:
        return None
    return str(numpy.__version__)


def _platform_info() -> Dict[str, Any]:
    return {
        "arch": platform.machine(),
        "os": platform.system(),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "hostname": socket.gethostname(),
    }


def _utc_now() -> str:
    now = datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0)
    return now.isoformat().replace("+00:00", "Z")


def _open(args: argparse.Namespace, spec: MeasureSpec, emitter: Emitter) -> Any:
    """The model opened on the spec's delegate (or through the custom-op path): an ``Opened``."""
    from .custom import open_custom
    from .delegates import Opened, module_for

    if args.model.endswith(".xml"):
        return module_for(spec.delegate).open_model(args.model, spec, emitter)
    custom_ops, model_info = _custom_ops(args.model)
    if custom_ops:
        if spec.delegate not in ("none", "xnnpack"):
            raise RunnerError(
                "bad_input",
                "the model has edgeq custom ops (%s), which run only on the CPU, not on delegate %s"
                % (", ".join(custom_ops), spec.delegate),
                "profile it with delegate xnnpack or none, or export it with int8 weights",
            )
        interp, init_ms, version = open_custom(
            args.model, model_info, custom_ops, args.custom_ops_lib, spec.runtime
        )
        opened = Opened(
            interp,
            init_ms,
            "ai-edge-litert",
            version,
            spec.delegate,
            threads=None,
            details={"path": "libLiteRt.so C API + libedgeq_ops.so", "custom_ops": custom_ops},
        )
        if spec.threads != 1:
            emitter.emit(
                "warning",
                code="threads.not_settable",
                message="the custom-op path (libLiteRt.so C API) cannot set a thread count; "
                "--threads %d was not applied" % spec.threads,
                hint="the result records threads as not set; compare it with runs at --threads 1",
            )
        return opened
    return module_for(spec.delegate).open_model(args.model, spec, emitter)


def _warn_threads(spec: MeasureSpec, emitter: Emitter) -> None:
    cpus = os.cpu_count() or 0
    if cpus and spec.threads > cpus:
        emitter.emit(
            "warning",
            code="threads.oversubscribed",
            message="%d threads on a device with %d CPUs: the threads compete for cores and latency "
            "gets worse, not better" % (spec.threads, cpus),
            hint="use --threads %d or fewer" % cpus,
        )


def run(args: argparse.Namespace, emitter: Emitter) -> Dict[str, Any]:
    from .measure import (
        LatencyRecorder,
        check_model_file,
        check_test_data_fits,
        evaluate,
        file_sha256,
        load_test_data,
        save_npy_atomic,
        set_random_inputs,
    )
    from .protocol import Progress
    from .rss import MemoryWatch
    from .session import SensorSession

    spec = MeasureSpec.from_json(args.spec)
    if args.save_outputs and not args.test_data:
        raise RunnerError(
            "bad_input",
            "--save-outputs needs --test-data (outputs are saved for the test samples)",
            "add --test-data test.npz",
        )
    if args.model.endswith(".xml"):  # an OpenVINO IR (with its .bin): the openvino delegate reads it
        if spec.delegate != "openvino":
            raise RunnerError("bad_input", "an OpenVINO IR runs only with delegate openvino", "")
    else:
        check_model_file(args.model)
    sensors = SensorSession.from_spec(spec, emitter)
    test = load_test_data(args.test_data) if args.test_data else None
    info = _platform_info()
    _warn_threads(spec, emitter)
    memory = MemoryWatch()
    memory.preload(spec)
    memory.start()
    opened = _open(args, spec, emitter)
    interp = opened.interp
    emitter.emit("runtime", runtime=opened.runtime, version=opened.runtime_version, arch=info["arch"])
    if test is not None:
        check_test_data_fits(interp, test[0])
    latency = LatencyRecorder(spec.runs, spec.return_samples)
    try:
        set_random_inputs(interp)
        invoke = interp.invoke
        with sensors:
            sensors.prepare()
            if spec.warmup:
                progress = Progress(emitter, "warmup", spec.warmup)
                for i in range(spec.warmup):
                    invoke()
                    progress.update(i + 1)
                progress.finish(spec.warmup)
            min_seconds = sensors.min_seconds(spec.min_seconds)
            progress = Progress(emitter, "measure", spec.runs)
            sensors.measure_start()
            latency.measure(invoke, min_seconds, progress)
            sensors.measure_end(latency.n)
            progress.finish(latency.n)

        accuracy = None
        if test is not None:
            x, y = test
            progress = Progress(emitter, "accuracy", int(x.shape[0]))
            accuracy, outputs = evaluate(interp, x, y, progress)
            progress.finish(int(x.shape[0]))
            if args.save_outputs:
                save_npy_atomic(args.save_outputs, outputs)
    except RunnerError:
        raise
    except Exception as exc:
        traceback.print_exc(file=sys.stderr)
        raise RunnerError(
            "runtime_failure",
            "%s %s failed while running the model: %s"
            % (opened.runtime, opened.runtime_version, one_line(exc)),
            "its traceback is in the runner's log",
        ) from None
    mem = memory.finish()
    device = {
        "name": args.device_name or info["hostname"],
        "runtime": opened.runtime,
        "runtime_version": opened.runtime_version,
        "numpy": _numpy_version(),
    }
    device.update(info)
    execution: Dict[str, Any] = {
        "delegate": opened.delegate,
        "delegate_nodes": _delegate_nodes(interp),
        "placement": opened.placement,
        "threads": opened.threads,
    }
    execution.update({k: v for k, v in opened.details.items() if k != "custom_ops"})
    if opened.notes:
        execution["notes"] = opened.notes
    result: Dict[str, Any] = {
        "schema": RESULT_SCHEMA,
        "timestamp": _utc_now(),
        "init_ms": round(opened.init_ms, 3),
        "latency_us": latency.stats(),
        "peak_rss_kb": mem.get("peak_rss_kb"),
        "memory": mem,
        "execution": {k: v for k, v in execution.items() if v is not None},
        "device": device,
        "model": _model_ref(args.model, file_sha256),
        "config": {
            "runs": spec.runs,
            "warmup": spec.warmup,
            "threads": opened.threads,
            "min_seconds": spec.min_seconds,
            "runtime": opened.runtime,
            "delegate": opened.delegate,
            "input": "random, seed 0",
        },
        "spec": spec.to_dict(),
        "runner_version": RUNNER_VERSION,
    }
    custom_ops = opened.details.get("custom_ops")
    if custom_ops:
        result["custom_ops"] = custom_ops
        result["config"]["custom_ops_lib"] = os.path.basename(args.custom_ops_lib)
    if accuracy is not None:
        result["accuracy"] = accuracy
    result.update(sensors.result())
    return result


def _model_ref(path: str, sha256: Any) -> Dict[str, Any]:
    """Name, sha256 and size of the model; an OpenVINO IR is its .xml and .bin together."""
    parts = [path] + ([path[:-4] + ".bin"] if path.endswith(".xml") else [])
    if len(parts) == 1:
        digest = sha256(path)
    else:
        import hashlib

        digest = hashlib.sha256("".join(sha256(p) for p in parts).encode()).hexdigest()
    return {
        "name": os.path.basename(path),
        "sha256": digest,
        "size_bytes": sum(os.path.getsize(p) for p in parts),
    }


def _delegate_nodes(interp: Any) -> Optional[int]:
    """How many DELEGATE nodes the execution plan has; None when the runtime does not say."""
    try:
        return sum(1 for op in interp._get_ops_details() if op.get("op_name") == "DELEGATE")
    except Exception:
        return None


def _custom_ops(model: str) -> Any:
    """The model's EDGEQ_* custom ops (empty for a plain model) and what the file says of its I/O."""
    from .modelfile import ModelFileError, edgeq_ops, read_model

    with open(model, "rb") as f:
        data = f.read()
    try:
        info = read_model(data)
    except ModelFileError as exc:
        raise RunnerError(
            "bad_input",
            "%s is not a readable TFLite model: %s" % (os.path.basename(model), exc),
            "export the model again and redeploy it",
        ) from None
    return edgeq_ops(info["custom_ops"]), info


def sensors(args: argparse.Namespace) -> Dict[str, Any]:
    import json

    from .sensors import probe_sensors

    power = None
    if args.power_config:
        try:
            power = json.loads(args.power_config)
        except ValueError as exc:
            raise RunnerError("bad_input", "--power-config is not JSON: %s" % exc, "") from None
    result = {"schema": SENSORS_SCHEMA, "timestamp": _utc_now(), "runner_version": RUNNER_VERSION}
    result.update(probe_sensors(args.sysfs_root, args.vcgencmd, power))
    return result


def preflight(args: argparse.Namespace) -> Dict[str, Any]:
    """What can be checked before a long run: the spec, the runtime and delegate, the power sensor.

    A missing runtime or accelerator is an error (as it would be at run time); a missing power
    sensor is a warning, as in a run (the rest of the measurement completes without it).
    """
    from .delegates import module_for

    spec = MeasureSpec.from_json(args.spec)
    result: Dict[str, Any] = {"schema": PREFLIGHT_SCHEMA, "runner_version": RUNNER_VERSION, "warnings": []}
    module = module_for(spec.delegate)
    result.update(module.preflight(spec))
    if spec.power is not None:
        from .sensors import probe_sensors

        configured = probe_sensors(spec.sysfs_root, spec.vcgencmd, spec.power)["power"]["configured"]
        result["power"] = configured
        if not configured.get("present"):
            result["warnings"].append(
                {
                    "code": "power.unavailable",
                    "message": "power and energy will not be measured: %s" % configured.get("detail"),
                    "hint": configured.get("hint")
                    or "pass --power-source NAME or set power_source in the device profile",
                }
            )
    return result


def delegate_facts(args: argparse.Namespace) -> Dict[str, Any]:
    """The delegate module's own ``probe()`` (libraries, devices, drivers), for ``devices check``."""
    from .delegates import MODULES, module_for

    if args.delegate not in MODULES:
        raise RunnerError(
            "bad_input", "unknown delegate %r" % args.delegate, "use one of: " + ", ".join(MODULES)
        )
    module = module_for(args.delegate)
    facts = module.probe() if hasattr(module, "probe") else {}
    return {"schema": DELEGATE_FACTS_SCHEMA, "delegate": args.delegate, "facts": facts}


def probe(args: argparse.Namespace) -> Dict[str, Any]:
    from .runtimes import RUNTIMES, probe_runtime

    runtimes = {}
    for name in RUNTIMES:
        runtimes[name] = probe_runtime(name)
    default = None
    for name in RUNTIMES:
        if runtimes[name].get("ok"):
            default = name
            break
    result: Dict[str, Any] = {
        "schema": PROBE_SCHEMA,
        "timestamp": _utc_now(),
        "python_executable": sys.executable,
        "numpy": _numpy_version(),
        "runtimes": runtimes,
        "default_runtime": default,
        "cpu_count": os.cpu_count(),
        "runner_version": RUNNER_VERSION,
    }
    result.update(_platform_info())
    return result


def main(argv: Optional[List[str]] = None) -> int:
    emitter = Emitter(protocol_stream())
    started = time.monotonic()
    try:
        args = build_parser().parse_args(argv)
        result = (
            run(args, emitter)
            if args.command == "run"
            else {
                "probe": probe,
                "sensors": sensors,
                "preflight": preflight,
                "delegate-facts": delegate_facts,
            }[args.command](args)
        )
        emitter.emit("result", result=result)
        return EXIT_OK
    except RunnerError as exc:
        emitter.emit("error", kind=exc.kind, message=exc.message, hint=exc.hint)
        return exc.exit_code
    except SystemExit as exc:  # --help
        return exc.code if isinstance(exc.code, int) else 0
    except KeyboardInterrupt:
        emitter.emit(
            "error",
            kind="runtime_failure",
            message="interrupted after %.1f s" % (time.monotonic() - started),
            hint="",
        )
        return 130
    except Exception as exc:  # a bug: traceback to stderr, one clean event to the host
        traceback.print_exc(file=sys.stderr)
        emitter.emit(
            "error",
            kind="runtime_failure",
            message="runner failed: %s: %s" % (type(exc).__name__, one_line(exc)),
            hint="its traceback is in the runner's log; please report it",
        )
        return 3
