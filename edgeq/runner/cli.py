"""The runner's command line: ``run`` (measure a model) and ``probe`` (what this device has).

python runner.pyz run --model m.tflite [--custom-ops-lib libedgeq_ops.so] [--runs 100] [--min-seconds S] [--warmup 10] [--threads 1]
                      [--runtime auto|ai-edge-litert|tflite-runtime|tensorflow|ai-edge-litert-compiled]
                      [--test-data test.npz] [--save-outputs out.npy] [--device-name NAME]
                      [--power-config JSON] [--thermal-config JSON] [--sysfs-root /sys] [--vcgencmd PATH]
python runner.pyz probe

With ``--power-config`` / ``--thermal-config`` (see :mod:`.session`) the run is framed by sensors:
optional cool-down, an idle power baseline, warm-up, then the measured phase, lengthened when the
power sensor needs more time to resolve it; the result gains ``power``, ``thermal`` and
``warnings``, and each sensor problem is one ``{"event": "warning", ...}`` line.

Measurement: ``--warmup`` untimed invokes, then timed invokes (perf_counter_ns around invoke() only)
until at least ``--runs`` are done AND, if given, at least ``--min-seconds`` of wall time has passed.
Latency input is random data of each input's dtype and shape (seed 0). With ``--test-data`` the
samples are then invoked one by one for top-1 accuracy (float x is quantized to an int8/uint8 input
as TFLite's QUANTIZE kernel does: round half away from zero of x / scale, plus zero point, clipped).

A model with edgeq's custom ops (EDGEQ_TERNARY_*, found by reading the model's op codes) runs through
ai-edge-litert's libLiteRt.so with the kernels of ``--custom-ops-lib`` registered (see
:mod:`.custom`); the result then lists them under ``custom_ops``.
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

from . import PROBE_SCHEMA, RESULT_SCHEMA, RUNNER_VERSION
from .custom import open_custom
from .measure import (
    check_model_file,
    check_test_data_fits,
    delegate_nodes,
    evaluate,
    file_sha256,
    latency_stats,
    load_interpreter,
    load_test_data,
    measure_latency,
    save_npy_atomic,
    set_random_inputs,
)
from .modelfile import ModelFileError, edgeq_ops, read_model
from .protocol import EXIT_OK, Emitter, Progress, RunnerError, one_line, protocol_stream
from .runtimes import CHOICES, RUNTIMES, Runtime, load_runtime, probe_runtime
from .session import SensorSession


class _Parser(argparse.ArgumentParser):
    """Usage errors become a bad_input event instead of argparse's text and exit."""

    def error(self, message: str) -> Any:
        raise RunnerError("bad_input", "%s: %s" % (self.prog, message), "see: %s --help" % self.prog)


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be >= 1, got %s" % text)
    return value


def _non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError("must be >= 0, got %s" % text)
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError("must be > 0, got %s" % text)
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="runner", description="edgeq's device-side runner (JSON lines on stdout).")
    sub = parser.add_subparsers(dest="command", metavar="{run,probe}")
    sub.required = True
    run = sub.add_parser("run", help="measure latency (and accuracy) of a .tflite model")
    run.add_argument("--model", required=True, help="path of the .tflite model on this device")
    run.add_argument(
        "--custom-ops-lib",
        default=None,
        help="libedgeq_ops.so built for this device, for models with EDGEQ_* custom ops",
    )
    run.add_argument("--runs", type=_positive_int, default=100, help="measured invokes (at least)")
    run.add_argument(
        "--min-seconds",
        type=_positive_float,
        default=None,
        help="keep measuring until this much time has passed (and at least --runs invokes)",
    )
    run.add_argument("--warmup", type=_non_negative_int, default=10, help="untimed invokes first")
    run.add_argument("--threads", type=_positive_int, default=1, help="interpreter threads")
    run.add_argument("--runtime", choices=CHOICES, default="auto")
    run.add_argument("--test-data", default=None, help=".npz with x (N, ...) float32 and y (N,) labels")
    run.add_argument("--save-outputs", default=None, help=".npy for the raw outputs on the test data")
    run.add_argument("--device-name", default=None, help="name to record (default: the hostname)")
    run.add_argument(
        "--power-config", default=None, help='power sensor config, JSON (e.g. {"source": "rapl"})'
    )
    run.add_argument("--thermal-config", default=None, help="thermal config, JSON ({} for the defaults)")
    run.add_argument("--sysfs-root", default=None, help="where sysfs is (default /sys; tests use a fake)")
    run.add_argument("--vcgencmd", default=None, help="the vcgencmd program (Raspberry Pi; default: on PATH)")
    sub.add_parser("probe", help="print what this device offers: arch, OS, Python, runtimes")
    return parser


def _peak_rss_kb() -> Optional[int]:
    """This process's peak resident memory in kB.

    Linux: VmHWM from /proc/self/status. Not getrusage's ru_maxrss: the kernel carries that across
    exec, so a runner started by a big parent (a host with TensorFlow loaded) would report the
    parent's peak instead of its own.
    """
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    try:
        import resource
    except ImportError:  # not on Linux/macOS
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    if sys.platform == "darwin":  # bytes there, kB on Linux
        peak //= 1024
    return int(peak)


def _numpy_version() -> str:
    import numpy

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


def run(args: argparse.Namespace, emitter: Emitter) -> Dict[str, Any]:
    if args.save_outputs and not args.test_data:
        raise RunnerError(
            "bad_input",
            "--save-outputs needs --test-data (outputs are saved for the test samples)",
            "add --test-data test.npz",
        )
    check_model_file(args.model)
    custom_ops, model_info = _custom_ops(args.model)
    sensors = SensorSession.from_args(args, emitter)
    test = load_test_data(args.test_data) if args.test_data else None
    info = _platform_info()
    if custom_ops:
        interp, init_ms, version = open_custom(
            args.model, model_info, custom_ops, args.custom_ops_lib, args.runtime
        )
        runtime = Runtime("ai-edge-litert", version, None)
        emitter.emit("runtime", runtime=runtime.name, version=runtime.version, arch=info["arch"])
    else:
        runtime = load_runtime(args.runtime)
        emitter.emit("runtime", runtime=runtime.name, version=runtime.version, arch=info["arch"])
        interp, init_ms = load_interpreter(runtime, args.model, args.threads)
    if test is not None:
        check_test_data_fits(interp, test[0])
    try:
        set_random_inputs(interp)
        invoke = interp.invoke
        with sensors:
            sensors.prepare()
            if args.warmup:
                progress = Progress(emitter, "warmup", args.warmup)
                for i in range(args.warmup):
                    invoke()
                    progress.update(i + 1)
                progress.finish(args.warmup)
            min_seconds = sensors.min_seconds(args.min_seconds)
            progress = Progress(emitter, "measure", args.runs)
            sensors.measure_start()
            samples, wall_s = measure_latency(invoke, args.runs, min_seconds, progress)
            sensors.measure_end(len(samples))
            progress.finish(len(samples))

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
            "%s %s failed while running the model: %s" % (runtime.name, runtime.version, one_line(exc)),
            "the traceback is on the runner's stderr",
        ) from None

    latency = latency_stats(samples)
    latency["wall_s"] = round(wall_s, 6)
    device = {
        "name": args.device_name or info["hostname"],
        "runtime": runtime.name,
        "runtime_version": runtime.version,
        "numpy": _numpy_version(),
    }
    device.update(info)
    result: Dict[str, Any] = {
        "schema": RESULT_SCHEMA,
        "timestamp": _utc_now(),
        "init_ms": round(init_ms, 3),
        "latency_us": latency,
        "peak_rss_kb": _peak_rss_kb(),
        "execution": {"delegate_nodes": delegate_nodes(interp)},
        "device": device,
        "model": {
            "name": os.path.basename(args.model),
            "sha256": file_sha256(args.model),
            "size_bytes": os.path.getsize(args.model),
        },
        "config": {
            "runs": args.runs,
            "warmup": args.warmup,
            "threads": args.threads,
            "min_seconds": args.min_seconds,
            "runtime": args.runtime,
            "input": "random, seed 0",
        },
        "runner_version": RUNNER_VERSION,
    }
    if custom_ops:
        result["custom_ops"] = custom_ops
        result["execution"]["path"] = "libLiteRt.so C API + libedgeq_ops.so"
        result["config"]["custom_ops_lib"] = os.path.basename(args.custom_ops_lib)
    if accuracy is not None:
        result["accuracy"] = accuracy
    result.update(sensors.result())
    return result


def _custom_ops(model: str) -> Any:
    """The model's EDGEQ_* custom ops (empty for a plain model) and what the file says of its I/O."""
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


def probe() -> Dict[str, Any]:
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
        result = run(args, emitter) if args.command == "run" else probe()
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
            hint="the traceback is on the runner's stderr; please report it",
        )
        return 3
