"""Which ops XNNPACK takes, asked of the host's own LiteRT interpreter (offline).

The host builds the same Interpreter the runner builds on a board (``OpResolverType.AUTO``: XNNPACK
applied by default; ``BUILTIN_WITHOUT_DEFAULT_DELEGATES`` for delegate ``none``) and reads its
execution plan with the runner's own :func:`~edgeq.runner.delegates.litert.plan_placement`, so the
offline answer and the device's answer come from one piece of code. It is the host runtime's
answer: a board with another runtime may place ops differently (tflite-runtime 2.14 leaves int8
graphs to the builtin kernels), which the device's placement record then shows.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from edgeq import tflite
from edgeq.errors import UserInputError
from edgeq.placement import Coverage
from edgeq.runner.delegates.litert import allocate, plan_placement

TAKEN = "XNNPACK"
NOT_TAKEN = "not taken by XNNPACK (unsupported op or type in this runtime)"
BUILTIN = "builtin kernel (no delegate asked for)"


def _runtime_version() -> str:
    from importlib import metadata

    try:
        return metadata.version("ai-edge-litert")
    except metadata.PackageNotFoundError:
        return "unknown"


def _interpreter(model: Path, delegate: str, threads: int) -> Any:
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    from edgeq import tfenv

    resolver = (
        OpResolverType.AUTO if delegate == "xnnpack" else OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
    )
    try:
        with tfenv.quiet_native():  # LiteRT prints "Created TensorFlow Lite XNNPACK delegate" on fd 2
            interp = Interpreter(
                model_path=str(model), experimental_op_resolver_type=resolver, num_threads=threads
            )
            allocate(interp)
    except Exception as exc:
        text = " ".join(str(exc).split()) or type(exc).__name__
        custom = [name for _, name in tflite.custom_ops(tflite.read_model(model).model)]
        hint = "export the model again (edgeq export)"
        if custom:
            hint = (
                f"the model has custom ops ({', '.join(sorted(set(custom)))}) that LiteRT alone has no kernel "
                "for; they run on their own kernels on the CPU, never on XNNPACK"
            )
        raise UserInputError(
            f"ai-edge-litert {_runtime_version()} cannot load {model.name}: {text[:200]}", hint
        ) from None
    return interp


def litert_coverage(model: Path, delegate: str, threads: int = 1) -> Coverage:
    """Where each op of ``model`` runs with delegate ``xnnpack`` or ``none``, by the host's LiteRT.

    >>> litert_coverage(Path("m.tflite"), "xnnpack").summary()
    '3 of 4 ops on xnnpack, 1 on the CPU'
    """
    if delegate not in ("xnnpack", "none"):
        raise ValueError(delegate)
    model = tflite.check_file(Path(model))
    interp = _interpreter(model, delegate, threads)
    if delegate == "xnnpack":
        plan = plan_placement(interp, "xnnpack", TAKEN, NOT_TAKEN)
    else:
        plan = plan_placement(interp, "none", "", BUILTIN)
    if plan is None:
        raise UserInputError(
            f"ai-edge-litert {_runtime_version()} does not expose its execution plan",
            "install the pinned ai-edge-litert (pip install ai-edge-litert==2.3.0)",
        )
    notes = [
        f"the host's ai-edge-litert {_runtime_version()} answered (offline); a board's runtime may place "
        "ops differently (tflite-runtime 2.14 leaves int8 graphs to the builtin kernels): every run "
        "reports the device's own placement"
    ]
    if delegate == "none":
        notes.append("delegate none asks for the builtin kernels only: every op runs on the CPU by design")
    cov = Coverage.from_dict(dict(plan, source="offline"))
    return Coverage(cov.delegate, "offline", cov.ops, tuple(notes))
