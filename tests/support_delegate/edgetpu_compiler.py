"""A stand-in for Coral's ``edgetpu_compiler`` 16.0 (which cannot be installed here), for tests.

Installed by the tests as an executable named ``edgetpu_compiler`` on a temporary PATH. It takes the
real compiler's arguments (-s, -m, -t, -o, -v, -a, -i, -n, -d, -k, models), writes the real output
names into the output directory (``<stem>_edgetpu.tflite`` with the mapped ops replaced by one
``edgetpu-custom-op``, ``<stem>_edgetpu.log``), prints its report in the real format and exits as
the real one does (0 when compiled; 1 when it refuses or fails).

What it decides about ops comes from the test, as JSON in the file named by
``EDGEQ_FAKE_EDGETPU_SCENARIO`` (absent: every op maps):
  {"statuses": {"3": "Operation not supported"}}   per-op status; the real compiler's cut applies
  {"failure": "not_quantized" | "op_version" | "internal" | "dynamic" | "timeout" | "hang"}
  ("hang" writes its pid to "pid_file" when given, then sleeps)
A float model is refused ("Model not quantized") as the real compiler refuses it. Each call's
arguments are appended as one JSON line to ``EDGEQ_FAKE_EDGETPU_ARGV`` when that is set.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

VERSION = "16.0.384591198"
MAPPED = "Mapped to Edge TPU"
CUT = "More than one subgraph is not supported"
_NOT_ALL = (
    "Model successfully compiled but not all operations are supported by the Edge TPU. A percentage of "
    "the model will instead run on the CPU, which is slower. If possible, consider updating your model to "
    "use only operations supported by the Edge TPU. For details, visit g.co/coral/model-reqs."
)
_DYNAMIC = "Attempting to use a delegate that only supports static-sized tensors with a graph that has dynamic-sized tensors."


def _size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.2f}{unit}"
        n /= 1024
    return f"{n:.2f}GiB"


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="edgetpu_compiler", add_help=False)
    p.add_argument("-h", "--help", action="store_true")
    p.add_argument("-v", "--version", action="store_true")
    p.add_argument("-s", "--show_operations", action="store_true")
    p.add_argument("-o", "--out_dir", default=".")
    p.add_argument("-m", "--min_runtime_version", type=int, default=14)
    p.add_argument("-t", "--timeout_sec", type=int, default=180)
    p.add_argument("-a", "--enable_multiple_subgraphs", action="store_true")
    p.add_argument("-i", "--intermediate_tensors", default=None)
    p.add_argument("-n", "--num_segments", type=int, default=None)
    p.add_argument("-d", "--search_delegate", action="store_true")
    p.add_argument("-k", "--delegate_search_step", type=int, default=None)
    p.add_argument("models", nargs="*")
    return p


def _read(path: Path) -> Any:
    from ai_edge_litert.tools import flatbuffer_utils

    return flatbuffer_utils.read_model_from_bytearray(bytearray(path.read_bytes()))


def _op_name(model: Any, op: Any) -> str:
    from ai_edge_litert import schema_py_generated as schema
    from ai_edge_litert.tools import flatbuffer_utils

    code = model.operatorCodes[op.opcodeIndex]
    builtin = flatbuffer_utils.get_builtin_code_from_operator_code(code)
    if builtin == schema.BuiltinOperator.CUSTOM:
        return code.customCode.decode() if code.customCode else "CUSTOM"
    names = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
    return names[builtin]


def _quantized(model: Any) -> bool:
    """The real compiler's test, as far as it shows: some op computes on 8-bit tensors."""
    sg = model.subgraphs[0]
    for op in sg.operators or []:
        ts = [sg.tensors[int(t)] for t in [*(op.inputs or []), *(op.outputs or [])] if int(t) >= 0]
        acts = [t for t in ts if not (t.buffer and model.buffers[t.buffer].data is not None)]
        if acts and all(t.type in (3, 9) for t in acts):  # UINT8, INT8
            return True
    return False


def _compiled_model(model: Any, mapped: int) -> bytes:
    """The input with its first ``mapped`` ops replaced by one edgetpu-custom-op, as the compiler
    writes it (the custom op's options are the Edge TPU program; here a placeholder)."""
    from ai_edge_litert import schema_py_generated as schema
    from ai_edge_litert.tools import flatbuffer_utils

    sg = model.subgraphs[0]
    ops = list(sg.operators or [])
    if mapped:
        inside, produced = ops[:mapped], set[int]()
        for op in inside:
            produced.update(int(t) for t in op.outputs)
        consts = {
            i for i, t in enumerate(sg.tensors) if t.buffer and model.buffers[t.buffer].data is not None
        }
        ins = []
        for op in inside:
            for t in op.inputs:
                t = int(t)
                if t >= 0 and t not in produced and t not in consts and t not in ins:
                    ins.append(t)
        used_later = {int(t) for op in ops[mapped:] for t in op.inputs} | {int(t) for t in sg.outputs}
        outs = [t for t in sorted(produced) if t in used_later]
        code = schema.OperatorCodeT()
        code.builtinCode = schema.BuiltinOperator.CUSTOM
        code.deprecatedBuiltinCode = schema.BuiltinOperator.CUSTOM
        code.customCode = b"edgetpu-custom-op"
        code.version = 1
        model.operatorCodes.append(code)
        custom = schema.OperatorT()
        custom.opcodeIndex = len(model.operatorCodes) - 1
        custom.inputs = ins
        custom.outputs = outs
        custom.customOptions = list(b"fake Edge TPU program")
        sg.operators = [custom, *ops[mapped:]]
    return bytes(flatbuffer_utils.convert_object_to_bytearray(model))


def main(argv: list[str]) -> int:
    record = os.environ.get("EDGEQ_FAKE_EDGETPU_ARGV")
    if record:
        with open(record, "a") as f:
            f.write(json.dumps(argv) + "\n")
    args = _parser().parse_args(argv)
    print(f"Edge TPU Compiler version {VERSION}")
    if args.version or args.help:
        return 0
    if not args.models:
        print("Error: no model given")
        return 1
    scenario_file = os.environ.get("EDGEQ_FAKE_EDGETPU_SCENARIO")
    scenario = json.loads(Path(scenario_file).read_text()) if scenario_file else {}
    failure = scenario.get("failure")
    model_arg = args.models[0]
    path = Path(model_arg)
    try:
        model = _read(path)
    except Exception:
        print(f"Invalid model: {model_arg}")
        print("Model could not be parsed")
        return 1
    if failure == "op_version":
        print(
            "ERROR: Didn't find op for builtin opcode 'FULLY_CONNECTED' version '12'. An older version of "
            "this builtin might be supported. Are you using an old TFLite binary with a newer model?"
        )
        print()
        print("ERROR: Registration failed.")
        print()
        print(f"Invalid model: {model_arg}")
        print("Model could not be parsed")
        return 1
    if failure == "not_quantized" or not _quantized(model):
        print(f"Invalid model: {model_arg}")
        print("Model not quantized")
        return 1
    # 16.0 reads and checks the model first, then starts its timer and compiles in a child process.
    print(f"Started a compilation timeout timer of {args.timeout_sec} seconds.")
    sys.stdout.flush()
    if failure == "hang":
        if scenario.get("pid_file"):
            Path(scenario["pid_file"]).write_text(str(os.getpid()))
        time.sleep(3600)
    if failure == "internal":
        print()
        print("Internal compiler error. Aborting! ")
        return 1
    if failure in ("dynamic", "timeout"):
        if failure == "dynamic":
            print(f"ERROR: {_DYNAMIC}")
            print(
                "Compilation failed: Model failed in Tflite interpreter. Please ensure model can be "
                "loaded/run in Tflite interpreter."
            )
            print("Compilation child process completed within timeout period.")
        else:
            print("Compilation timeout. This is usually caused by large activations.")
        print("Compilation failed! ")
        return 1

    names = [_op_name(model, op) for op in model.subgraphs[0].operators or []]
    wanted = {int(k): v for k, v in scenario.get("statuses", {}).items()}
    statuses, cut = [], False
    for i, _ in enumerate(names):
        own = wanted.get(i, MAPPED)
        if cut and own == MAPPED:
            own = CUT
        cut = cut or own != MAPPED
        statuses.append(own)
    mapped = 0
    while mapped < len(statuses) and statuses[mapped] == MAPPED:
        mapped += 1
    out_dir = args.out_dir
    stem = path.stem + "_edgetpu"
    out_model = os.path.join(out_dir, stem + ".tflite")
    out_log = os.path.join(out_dir, stem + ".log")
    in_size = path.stat().st_size
    data = _compiled_model(model, mapped)
    Path(out_model).write_bytes(data)

    rows: list[tuple[str, int, str]] = []
    for name, status in zip(names, statuses, strict=True):
        for k, (n, c, s) in enumerate(rows):
            if n == name and s == status:
                rows[k] = (n, c + 1, s)
                break
        else:
            rows.append((name, 1, status))
    table = ["Operator                       Count      Status", ""]
    table += [f"{n:<30} {c:<10} {s}" for n, c, s in rows]
    Path(out_log).write_text(
        "\n".join(
            [
                f"Edge TPU Compiler version {VERSION}",
                f"Input: {model_arg}",
                f"Output: {out_model}",
                "",
                *table,
            ]
        )
        + "\n"
    )
    on_chip = min(in_size, 8 * 1024 * 1024) if mapped else 0
    print()
    print(f"Model compiled successfully in {max(1, in_size // 1000)} ms.")
    print()
    print(f"Input model: {model_arg}")
    print(f"Input size: {_size(in_size)}")
    print(f"Output model: {out_model}")
    print(f"Output size: {_size(len(data))}")
    print(f"On-chip memory used for caching model parameters: {_size(on_chip)}")
    print(f"On-chip memory remaining for caching model parameters: {_size(8 * 1024 * 1024 - on_chip)}")
    print("Off-chip memory used for streaming uncached model parameters: 0.00B")
    print(f"Number of Edge TPU subgraphs: {1 if mapped else 0}")
    print(f"Total number of operations: {len(names)}")
    print(f"Operation log: {out_log}")
    print()
    if mapped < len(names):
        print(_NOT_ALL)
        print(f"Number of operations that will run on Edge TPU: {mapped}")
        print(f"Number of operations that will run on CPU: {len(names) - mapped}")
        print()
    if args.show_operations:
        print("\n".join(table))
    else:
        print("See the operation log file for individual operation details.")
    print("Compilation child process completed within timeout period.")
    print("Compilation succeeded! ")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
