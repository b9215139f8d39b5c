"""Loading a model, timing invoke(), and top-1 accuracy on test data."""

from __future__ import annotations

import contextlib
import gc
import hashlib
import os
import random
import time
from array import array
from typing import Any, Callable, Dict, List, Optional, Tuple

import numpy as np

from .protocol import Progress, RunnerError, one_line

TFLITE_IDENTIFIER = b"TFL3"
INPUT_SEED = 0


def file_sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def check_model_file(path: str) -> None:
    """A missing file or one without the flatbuffer identifier is bad input, said in one line."""
    name = os.path.basename(path)
    if not os.path.isfile(path):
        raise RunnerError(
            "bad_input",
            "model file not found on the device: %s" % path,
            "deploy the model first (edgeq does this for you)",
        )
    with open(path, "rb") as f:
        head = f.read(8)
    if len(head) < 8 or head[4:8] != TFLITE_IDENTIFIER:
        raise RunnerError(
            "bad_input",
            "%s is not a TFLite model (no 'TFL3' identifier at bytes 4-8)" % name,
            "pass a .tflite flatbuffer written by the TFLite converter (edgeq export)",
        )


def random_input(detail: Dict[str, Any], rng: Any) -> np.ndarray:
    """Random data of the tensor's dtype and shape (integers span the dtype, floats are U(-1, 1))."""
    dtype = np.dtype(detail["dtype"])
    shape = tuple(int(n) for n in detail["shape"])
    if dtype.kind in "iu" and dtype.itemsize <= 2:
        info = np.iinfo(dtype)
        return rng.integers(int(info.min), int(info.max) + 1, size=shape).astype(dtype)
    if dtype.kind == "f":
        return rng.uniform(-1.0, 1.0, size=shape).astype(dtype)
    # Wide integers are usually indices or lengths: zeros are always valid.
    return np.zeros(shape, dtype=dtype)


def set_random_inputs(interp: Any, seed: int = INPUT_SEED) -> None:
    rng = np.random.default_rng(seed)
    for d in interp.get_input_details():
        interp.set_tensor(d["index"], random_input(d, rng))


def quantize(x: np.ndarray, scale: float, zero_point: int, dtype: Any) -> np.ndarray:
    """``q = round(x / scale) + zero_point``, clipped to the dtype, as TFLite's QUANTIZE kernel does it.

    Division (not multiplication by 1/scale) in float32, rounding half away from zero (TfLiteRound,
    i.e. std::round), so the int8 input is what the converted model's removed QUANTIZE op would
    have produced. NumPy's np.round rounds half to even and differs exactly at .5.
    """
    info = np.iinfo(dtype)
    v = x.astype(np.float32) / np.float32(scale)
    r = np.sign(v) * np.floor(np.abs(v) + np.float32(0.5))
    q = r.astype(np.int64) + int(zero_point)
    return np.clip(q, info.min, info.max).astype(dtype)


class LatencyRecorder:
    """Times invokes and keeps what a result needs, in memory that does not grow with the runs.

    Mean, std, min and max are exact over every run. Up to ``KEEP`` samples are kept as they come;
    beyond that a uniform reservoir of ``KEEP`` (Vitter's algorithm R, seeded), so percentiles of a
    million runs come from an unbiased sample of them and the runner's memory stays flat
    (``KEEP`` × 8 bytes). The result carries at most ``return_samples`` raw samples.
    """

    KEEP = 1 << 16

    def __init__(self, runs: int, return_samples: int) -> None:
        self.runs = runs
        self.return_samples = return_samples
        self.buf = array("q", bytes(8 * min(self.KEEP, max(runs, 1))))
        self.n = 0
        self.total = 0
        self.total_sq = 0
        self.low: Optional[int] = None
        self.high: Optional[int] = None
        self.wall_s = 0.0
        self._rng = random.Random(INPUT_SEED)

    def _keep(self, dt: int) -> None:
        n = self.n
        if n < len(self.buf):
            self.buf[n] = dt
        elif n < self.KEEP:
            self.buf.append(dt)
        else:
            j = self._rng.randrange(n + 1)
            if j < self.KEEP:
                self.buf[j] = dt
        self.n = n + 1
        self.total += dt
        self.total_sq += dt * dt
        if self.low is None or dt < self.low:
            self.low = dt
        if self.high is None or dt > self.high:
            self.high = dt

    def measure(
        self, invoke: Callable[[], Any], min_seconds: Optional[float], progress: Optional[Progress] = None
    ) -> None:
        """Time each ``invoke()`` alone with perf_counter_ns.

        Rule: at least ``runs`` invokes, and when ``min_seconds`` is given also at least that much
        wall time of this phase (the stricter of the two wins, as in TFLite's benchmark_model).
        """
        clock = time.perf_counter_ns
        runs = self.runs
        keep = self._keep
        min_ns = None if min_seconds is None else int(min_seconds * 1e9)
        gc_was_enabled = gc.isenabled()
        gc.disable()  # a collection inside a timed invoke would be noise, not the model
        start = clock()
        try:
            while True:
                n = self.n
                if n >= runs and (min_ns is None or clock() - start >= min_ns):
                    break
                t0 = clock()
                invoke()
                t1 = clock()
                keep(t1 - t0)
                if progress is not None:
                    total = runs
                    if min_ns is not None:
                        total = max(runs, int(min_ns * (n + 1) / max(t1 - start, 1)) + 1)
                    progress.update(n + 1, total)
        finally:
            if gc_was_enabled:
                gc.enable()
        self.wall_s = (clock() - start) / 1e9

    def kept(self) -> np.ndarray:
        return np.frombuffer(self.buf, dtype=np.int64)[: min(self.n, len(self.buf))]

    def stats(self) -> Dict[str, Any]:
        """mean, std (population), min, p50, p90, p99, max in microseconds, n, wall_s, samples."""
        n = self.n
        kept = self.kept().astype(np.float64) / 1000.0
        p50, p90, p99 = np.percentile(kept, [50, 90, 99])
        mean_ns = self.total / n
        var_ns = max(self.total_sq / n - mean_ns * mean_ns, 0.0)
        out: Dict[str, Any] = {
            "mean": round(mean_ns / 1000.0, 3),
            "std": round(var_ns**0.5 / 1000.0, 3),
            "min": round((self.low or 0) / 1000.0, 3),
            "p50": round(float(p50), 3),
            "p90": round(float(p90), 3),
            "p99": round(float(p99), 3),
            "max": round((self.high or 0) / 1000.0, 3),
            "n": n,
            "wall_s": round(self.wall_s, 6),
        }
        notes = []
        if n > kept.size:
            notes.append("percentiles from a uniform random sample of %d of the %d runs" % (kept.size, n))
        samples = kept
        if self.return_samples < kept.size:
            pick = np.sort(
                np.random.default_rng(INPUT_SEED).choice(kept.size, self.return_samples, replace=False)
            )
            samples = kept[pick]
            notes.append("samples: %d drawn at random from %d kept" % (self.return_samples, kept.size))
        if self.return_samples:
            out["samples"] = [round(float(v), 3) for v in samples]
        if notes:
            out["samples_note"] = "; ".join(notes)
        return out


def load_test_data(path: str) -> Tuple[np.ndarray, np.ndarray]:
    """``x`` (N, ...) features and ``y`` (N,) int labels (or (N, C) one-hot) from an .npz file."""
    if not os.path.isfile(path):
        raise RunnerError("bad_input", "test data not found on the device: %s" % path, "")
    try:
        with np.load(path, allow_pickle=False) as npz:
            keys = sorted(npz.files)
            if "x" not in keys or "y" not in keys:
                raise RunnerError(
                    "bad_input",
                    "test data %s needs arrays 'x' and 'y' (found: %s)"
                    % (os.path.basename(path), ", ".join(keys) or "none"),
                    "save it with np.savez(path, x=features, y=labels)",
                )
            x = npz["x"]
            y = npz["y"]
    except RunnerError:
        raise
    except Exception as exc:
        raise RunnerError(
            "bad_input",
            "cannot read test data %s: %s" % (os.path.basename(path), one_line(exc)),
            "write it with np.savez (no pickled objects)",
        ) from None
    if x.ndim < 1 or y.ndim not in (1, 2) or x.shape[0] != y.shape[0] or x.shape[0] == 0:
        raise RunnerError(
            "bad_input",
            "test data shapes do not fit: x %s, y %s" % (tuple(x.shape), tuple(y.shape)),
            "x is (N, ...) features and y is (N,) labels for the same N > 0 samples",
        )
    if y.ndim == 2:
        y = y.argmax(axis=1)
    if y.dtype.kind not in "iu":
        raise RunnerError("bad_input", "test labels y must be integers, not %s" % y.dtype, "")
    return x, y


def check_test_data_fits(interp: Any, x: np.ndarray) -> None:
    """Fail before the latency phase, not after it, when the test data cannot feed this model."""
    _feed(x[:1], _input_for(interp.get_input_details(), x))


def _input_for(inputs: List[Dict[str, Any]], x: np.ndarray) -> Dict[str, Any]:
    if len(inputs) != 1:
        raise RunnerError(
            "bad_input",
            "accuracy needs a model with one input; this one has %d" % len(inputs),
            "run without --test-data to measure latency only",
        )
    inp = inputs[0]
    want = [int(n) for n in inp["shape"]]
    sample = list(x.shape[1:])
    if len(want) != len(sample) + 1 or want[1:] != sample:
        raise RunnerError(
            "bad_input",
            "test samples have shape %s but the model takes %s" % (tuple(sample), tuple(want[1:])),
            "give x as (N, %s)" % ", ".join(str(n) for n in want[1:]),
        )
    return inp


def _prepare_batch1(interp: Any, x: np.ndarray) -> Tuple[Dict[str, Any], Dict[str, Any]]:
    """Make the model take one sample per invoke, checking that x's samples fit its input."""
    inp = _input_for(interp.get_input_details(), x)
    want = [int(n) for n in inp["shape"]]
    if want[0] != 1:
        try:
            interp.resize_tensor_input(inp["index"], [1] + want[1:])
            interp.allocate_tensors()
        except Exception as exc:
            raise RunnerError(
                "runtime_failure",
                "cannot resize the model's batch from %d to 1: %s" % (want[0], one_line(exc)),
                "export the model with batch size 1",
            ) from None
        inp = interp.get_input_details()[0]
    return inp, interp.get_output_details()[0]


def _feed(x: np.ndarray, inp: Dict[str, Any]) -> np.ndarray:
    dtype = np.dtype(inp["dtype"])
    if x.dtype == dtype:
        return x  # already in the input's type (e.g. pre-quantized int8)
    if x.dtype.kind != "f":
        raise RunnerError(
            "bad_input",
            "test features x are %s; the model input is %s" % (x.dtype, dtype),
            "give x as float32 (edgeq quantizes it with the input's scale and zero point)",
        )
    if dtype.kind in "iu":
        scale, zero_point = inp.get("quantization", (0.0, 0))
        if not scale:
            raise RunnerError(
                "bad_input",
                "the model input is %s without a quantization scale" % dtype,
                "give x already as %s" % dtype,
            )
        return quantize(x, float(scale), int(zero_point), dtype)
    return x.astype(dtype)


def evaluate(
    interp: Any, x: np.ndarray, y: np.ndarray, progress: Optional[Progress] = None
) -> Tuple[Dict[str, Any], np.ndarray]:
    """Invoke once per sample; return {top1, n, correct, confusion} and the raw outputs of output 0.

    ``confusion[i][j]`` counts the samples of true class ``i`` predicted as class ``j`` (classes are
    the model's outputs).
    """
    inp, out = _prepare_batch1(interp, x)
    feed = _feed(x, inp)
    n = int(x.shape[0])
    outputs: Optional[np.ndarray] = None
    for i in range(n):
        interp.set_tensor(inp["index"], feed[i : i + 1])
        interp.invoke()
        o = interp.get_tensor(out["index"])
        if outputs is None:
            outputs = np.empty((n, *o.shape[1:]), dtype=o.dtype)
        outputs[i] = o[0]
        if progress is not None:
            progress.update(i + 1)
    assert outputs is not None
    flat = outputs.reshape(n, -1)
    pred = flat.argmax(axis=1)
    truth = y.astype(np.int64)
    correct = int((pred == truth).sum())
    classes = max(int(flat.shape[1]), int(truth.max()) + 1)
    confusion = np.zeros((classes, classes), dtype=np.int64)
    np.add.at(confusion, (truth, pred), 1)
    return {"top1": correct / n, "n": n, "correct": correct, "confusion": confusion.tolist()}, outputs


def save_npy_atomic(path: str, array: np.ndarray) -> None:
    """Write to a temporary name next to ``path``, fsync, then rename: never a half-written file."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    tmp = os.path.join(directory, ".edgeq-%d.part" % os.getpid())  # short: the final name may be 255 bytes
    try:
        with open(tmp, "wb") as f:
            np.save(f, array)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
