"""Compiling a model for the Edge TPU with Coral's ``edgetpu_compiler`` (x86-64 hosts only).

Pinned flags: ``-s`` (the per-op table on stdout), ``-m 14`` (the runtime version the offline op
table is for), ``-t`` (the compiler's own timeout, from ``timeout_s``), ``-o`` a private directory;
never ``-a`` (experimental multiple subgraphs) nor any segmentation. The compiler writes
``<stem>_edgetpu.tflite`` and ``<stem>_edgetpu.log``; both are moved into ``out_dir`` only when the
compile succeeded, so a failed or interrupted compile leaves nothing half-written there.

Every failure is one UserInputError line: no compiler on PATH (with what to install), a compiler
that refuses the model (its own reason), one that crashes or runs out of time.
"""

from __future__ import annotations

import contextlib
import os
import platform
import shutil
import signal
import subprocess
import tempfile
from pathlib import Path

from edgeq import tflite
from edgeq.delegates.delegate import CompileResult
from edgeq.errors import UserInputError

from . import compiler_log
from .coverage import COMPILED_OP, MIN_RUNTIME_VERSION, NAME, analyze

COMPILER = "edgetpu_compiler"
_INSTALL = (
    "install Coral's edgetpu-compiler package on an x86-64 Debian/Ubuntu host (apt repository "
    "https://packages.cloud.google.com/apt coral-edgetpu-stable, see https://coral.ai/docs/edgetpu/compiler/) "
    "or use Coral's web compiler (Colab); 'edgeq inspect MODEL --delegate edgetpu' works without it"
)
_HINTS = {
    "not_quantized": "quantize the model to full int8 with 'edgeq export' and compile the .tflite it writes",
    "op_version": "the compiler (last release 16.0) predates this op version: convert with an older "
    "TensorFlow, or replace the op ('edgeq inspect --delegate edgetpu' lists the ops)",
    "internal": "the compiler crashed on this model: try simplifying the model; Coral's issue tracker "
    "(github.com/google-coral/edgetpu) collects these",
    "timeout": "the compiler's own timer ran out (large activations cause this): give it more time "
    "(--timeout) or make the model's tensors smaller",
    "failed": "fix what the compiler names, or see 'edgeq inspect MODEL --delegate edgetpu'",
    "invalid": "check that the file is a TFLite model the TFLite interpreter can run",
    "unknown": "run edgetpu_compiler -s on the model by hand to see its whole output",
}


def find_compiler() -> str:
    """The compiler's path, or one UserInputError saying what to install."""
    path = shutil.which(COMPILER)
    if path is None:
        where = (
            ""
            if platform.machine() in ("x86_64", "AMD64")
            else f" (and it runs only on x86-64, not {platform.machine()})"
        )
        raise UserInputError(f"{COMPILER} is not installed on this host{where}", _INSTALL)
    return path


def compiler_version(path: str, timeout_s: float = 30.0) -> str:
    """``16.0.384591198`` from ``edgetpu_compiler --version`` ("" when it does not say)."""
    try:
        proc = subprocess.run(
            [path, "--version"], capture_output=True, text=True, timeout=timeout_s, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return compiler_log.parse(proc.stdout + proc.stderr).version


def _major(version: str) -> int:
    try:
        return int(version.split(".")[0])
    except ValueError:
        return 0


def _run(argv: list[str], cwd: Path, timeout_s: float) -> tuple[int, str]:
    """Run in its own process group, so a timeout (or Ctrl-C, which no longer reaches it) ends the
    compiler's child process too."""
    proc = subprocess.Popen(
        argv,
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        errors="replace",
        start_new_session=True,
    )
    try:
        out, _ = proc.communicate(timeout=timeout_s)
    except BaseException:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        raise
    return proc.returncode, out


def compile_model(model: Path, out_dir: Path, *, timeout_s: float = 600.0) -> CompileResult:
    """Compile ``model`` into ``out_dir/<stem>_edgetpu.tflite`` and compare with the offline analysis."""
    model = tflite.check_file(Path(model))
    parsed = tflite.read_model(model)
    offline = analyze(parsed)  # refuses a float model before the compiler does
    if any(o.op == COMPILED_OP for o in offline.ops):
        raise UserInputError(
            f"{model.name} is already compiled for the Edge TPU (it has an {COMPILED_OP})",
            "compile the model edgeq export wrote, not the *_edgetpu.tflite",
        )
    if timeout_s <= 0:
        raise UserInputError(
            f"compile timeout must be positive, got {timeout_s:g} s", "pass e.g. --timeout 600"
        )
    compiler = find_compiler()
    version = compiler_version(compiler)
    out_dir = Path(out_dir)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        work = Path(tempfile.mkdtemp(prefix=".edgeq-edgetpu-", dir=out_dir))
    except OSError as exc:
        raise UserInputError(
            f"cannot write to {out_dir}: {exc.strerror}", "pass a writable --out directory"
        ) from None
    try:
        argv = [compiler, "-s", "-m", str(MIN_RUNTIME_VERSION)]
        if _major(version) >= 16:  # -t (the compiler's own timer) is new in 16.0
            argv += ["-t", str(max(1, int(timeout_s)))]
        argv += ["-o", str(work), str(model.resolve())]
        try:
            code, out = _run(argv, work, timeout_s + min(30.0, 2.0 + 0.05 * timeout_s))
        except subprocess.TimeoutExpired:
            raise UserInputError(
                f"{COMPILER} did not finish compiling {model.name} within {timeout_s:g} s",
                "give it more time (--timeout), or simplify the model",
            ) from None
        except OSError as exc:
            raise UserInputError(f"cannot run {compiler}: {exc.strerror}", _INSTALL) from None
        log = compiler_log.parse(out)
        if log.failure is not None or code != 0:
            reason = log.failure or _last_line(out) or "no output"
            kind = log.failure_kind or "unknown"
            raise UserInputError(
                f"{COMPILER} {log.version or version} could not compile {model.name}: {reason}"
                + (f" (exit code {code})" if log.failure is None else ""),
                _HINTS[kind],
            )
        stem = model.stem + "_edgetpu"
        compiled, log_file = work / f"{stem}.tflite", work / f"{stem}.log"
        if not compiled.is_file():
            raise UserInputError(
                f"{COMPILER} reported success but wrote no {compiled.name}",
                _HINTS["unknown"],
            )
        if not log.rows and log_file.is_file():
            log = compiler_log.parse(log_file.read_text(errors="replace"))
        coverage, disagreements = compiler_log.to_coverage(log, offline)
        target = out_dir / compiled.name
        os.replace(compiled, target)
        if log_file.is_file():
            os.replace(log_file, out_dir / log_file.name)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return CompileResult(
        delegate=NAME,
        model=target,
        coverage=coverage,
        log=out,
        compiler=f"{COMPILER} {log.version or version}".strip(),
        disagreements=disagreements,
    )


def _last_line(text: str) -> str:
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return lines[-1] if lines else ""
