"""Delegates ``none`` and ``xnnpack``: the TFLite/LiteRT Interpreter on the CPU.

``xnnpack`` is the runtimes' default (``OpResolverType.AUTO`` applies XNNPACK to the ops it
supports); ``none`` asks for ``BUILTIN_WITHOUT_DEFAULT_DELEGATES``: the builtin kernels only. Which
ops XNNPACK really took is read back from the interpreter's execution plan, so a runtime that does
not apply it (tflite-runtime 2.14 leaves int8 graphs alone) says so instead of claiming it.
"""

from __future__ import annotations

import os
import sys
import time
from typing import Any, Dict, List, Optional, Set

from ..protocol import RunnerError, one_line, root_cause
from ..runtimes import COMPILED, Runtime, load_runtime
from . import Opened

DELEGATE_NODE = "DELEGATE"


def _op_resolver(runtime: Runtime, delegate: str) -> Any:
    """The runtime's OpResolverType member for ``delegate``, or None where it has none."""
    module = sys.modules.get(runtime.interpreter_cls.__module__)
    types = getattr(module, "OpResolverType", None)
    if types is None:
        if delegate == "none":
            raise RunnerError(
                "bad_input",
                "%s %s cannot turn its default delegate off" % (runtime.name, runtime.version),
                "use delegate xnnpack, or a newer runtime (ai-edge-litert)",
            )
        return None
    return types.BUILTIN_WITHOUT_DEFAULT_DELEGATES if delegate == "none" else types.AUTO


def load_error(exc: BaseException, model_path: str, runtime: Runtime) -> RunnerError:
    """One line for a model the runtime cannot load, by what the runtime said."""
    message = one_line(exc)
    if isinstance(exc, SystemError) or "returned a result with an exception set" in message:
        message = one_line(root_cause(exc))
    lowered = message.lower()
    where = "%s %s" % (runtime.name, runtime.version)
    if "didn't find op" in lowered or "unresolved custom op" in lowered or "op builtin_code" in lowered:
        return RunnerError(
            "runtime_failure",
            "%s cannot run %s: %s" % (where, os.path.basename(model_path), message),
            "the model uses an op this runtime lacks: upgrade the runtime or ship the op's kernel",
        )
    if "numpy" in lowered or "_array_api" in lowered or "multiarray" in lowered:
        return RunnerError(
            "runtime_failure",
            "%s failed to start: %s" % (where, message),
            "this runtime was built for NumPy 1: pip install 'numpy<2', or use ai-edge-litert",
        )
    return RunnerError(
        "bad_input",
        "%s cannot load %s: %s" % (where, os.path.basename(model_path), message),
        "the file looks truncated or corrupt: export the model again and redeploy it",
    )


def allocate(interp: Any) -> None:
    """Resize inputs with a dynamic dimension (-1 in ``shape_signature``) to 1, then allocate."""
    for d in interp.get_input_details():
        sig = d.get("shape_signature")
        if sig is not None and any(int(n) < 0 for n in sig):
            interp.resize_tensor_input(d["index"], [1 if int(n) < 0 else int(n) for n in sig])
    interp.allocate_tensors()


def partitions(nodes: List[Dict[str, Any]]) -> List[Set[int]]:
    """The model nodes each DELEGATE node took: those between its input and output tensors (walk
    back from its outputs through producers, stopping at its inputs)."""
    producer: Dict[int, Dict[str, Any]] = {}
    for n in nodes:
        if n.get("op_name") != DELEGATE_NODE:
            for t in n.get("outputs", []):
                producer[int(t)] = n
    parts = []
    for part in (n for n in nodes if n.get("op_name") == DELEGATE_NODE):
        inputs = set(int(t) for t in part.get("inputs", []))
        stack = [int(t) for t in part.get("outputs", [])]
        seen: Set[int] = set()
        taken: Set[int] = set()
        while stack:
            t = stack.pop()
            if t in seen or t in inputs or t not in producer:
                continue
            seen.add(t)
            node = producer[t]
            taken.add(int(node["index"]))
            stack.extend(int(x) for x in node.get("inputs", []) if int(x) >= 0)
        parts.append(taken)
    return parts


def plan_placement(interp: Any, delegate: str, on_reason: str, off_reason: str) -> Optional[Dict[str, Any]]:
    """Where each op of the model ran, from the interpreter's execution plan (edgeq.placement shape).

    ``_get_ops_details()`` lists the model's own nodes, then one ``DELEGATE`` node per partition a
    delegate took (see :func:`partitions`). None when the runtime does not expose its nodes.
    """
    try:
        nodes = list(interp._get_ops_details())
    except Exception:
        return None
    model_nodes = [n for n in nodes if n.get("op_name") != DELEGATE_NODE]
    taken: Set[int] = set().union(*partitions(nodes))
    ops = []
    for n in model_nodes:
        on = int(n["index"]) in taken
        ops.append(
            {
                "index": int(n["index"]),
                "op": str(n.get("op_name")),
                "placement": "delegate" if on else "cpu",
                "reason": on_reason if on else off_reason,
            }
        )
    on_delegate = sum(1 for o in ops if o["placement"] == "delegate")
    return {
        "delegate": delegate,
        "source": "device",
        "summary": "%d of %d ops on %s, %d on the CPU"
        % (on_delegate, len(ops), delegate, len(ops) - on_delegate),
        "on_delegate": on_delegate,
        "on_cpu": len(ops) - on_delegate,
        "total": len(ops),
        "ops": ops,
        "notes": [],
    }


def open_model(model_path: str, spec: Any, emitter: Any = None) -> Opened:
    runtime = load_runtime(spec.runtime)
    t0 = time.perf_counter_ns()
    if runtime.name == COMPILED:
        if spec.delegate == "none":
            raise RunnerError(
                "bad_input",
                "runtime ai-edge-litert-compiled always runs its CPU accelerator (XNNPACK)",
                "use delegate xnnpack with this runtime, or runtime ai-edge-litert for delegate none",
            )
        try:
            interp = runtime.interpreter_cls(model_path=model_path, num_threads=spec.threads)
        except Exception as exc:
            raise load_error(exc, model_path, runtime) from None
        init_ms = (time.perf_counter_ns() - t0) / 1e6
        full = interp.is_fully_accelerated()
        return Opened(
            interp,
            init_ms,
            runtime.name,
            runtime.version,
            "xnnpack",
            threads=spec.threads,
            notes=[
                "CompiledModel: fully accelerated" if full else "CompiledModel: some ops on the CPU fallback"
            ],
            details={"path": "CompiledModel"},
        )
    kwargs: Dict[str, Any] = {"model_path": model_path, "num_threads": spec.threads}
    resolver = _op_resolver(runtime, spec.delegate)
    if resolver is not None:
        kwargs["experimental_op_resolver_type"] = resolver
    try:
        interp = runtime.interpreter_cls(**kwargs)
        allocate(interp)
    except RunnerError:
        raise
    except Exception as exc:
        raise load_error(exc, model_path, runtime) from None
    init_ms = (time.perf_counter_ns() - t0) / 1e6
    if spec.delegate == "none":
        placement = plan_placement(interp, "none", "", "builtin kernel (no delegate asked for)")
    else:
        placement = plan_placement(
            interp, "xnnpack", "XNNPACK", "not taken by XNNPACK (unsupported op or type in this runtime)"
        )
    return Opened(interp, init_ms, runtime.name, runtime.version, spec.delegate, placement, spec.threads)


def preflight(spec: Any) -> Dict[str, Any]:
    """Before any work: the runtime imports and can drop its default delegate if asked to."""
    runtime = load_runtime(spec.runtime)
    if runtime.name != COMPILED:
        _op_resolver(runtime, spec.delegate)
    return {"runtime": runtime.name, "runtime_version": runtime.version}
