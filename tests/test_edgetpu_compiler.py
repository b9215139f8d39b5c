"""edgetpu_compiler: its log parser on texts in the real format, and edgeq's run of it.

The compiler cannot be installed here (x86-64 apt package from Coral's repository), so the run
tests put a stand-in named ``edgetpu_compiler`` on a temporary PATH (tests/support_delegate/
edgetpu_compiler.py): same arguments, same output names, same report format, same exit codes.
"""

from __future__ import annotations

import json
import os
import stat
import sys
import time
from pathlib import Path

import pytest
from support_delegate import compiler_logs as logs
from support_delegate import models

from edgeq import tflite
from edgeq.delegates import get as get_delegate
from edgeq.delegates.edgetpu import compiler_log
from edgeq.delegates.edgetpu import coverage as cov
from edgeq.errors import UserInputError
from edgeq.placement import CPU, DELEGATE, Coverage, OpPlacement

FAKE = Path(__file__).parent / "support_delegate" / "edgetpu_compiler.py"
MORE = "More than one subgraph is not supported"

# --- the parser ---------------------------------------------------------------------------------


def test_parse_a_fully_mapped_compile() -> None:
    log = compiler_log.parse(logs.ALL_MAPPED_16)
    assert log.version == "16.0.384591198" and log.compiled and log.failure is None
    assert log.input_model == "student_int8.tflite"
    assert log.output_model == "out/student_int8_edgetpu.tflite"
    assert log.operation_log == "out/student_int8_edgetpu.log"
    assert (log.subgraphs, log.total, log.on_edgetpu, log.on_cpu) == (1, 8, None, None)
    assert log.mapped == 8 and log.table_total == 8
    assert [(r.op, r.count, r.status) for r in log.rows] == [
        ("CONV_2D", 3, "Mapped to Edge TPU"),
        ("MAX_POOL_2D", 2, "Mapped to Edge TPU"),
        ("RESHAPE", 1, "Mapped to Edge TPU"),
        ("FULLY_CONNECTED", 2, "Mapped to Edge TPU"),
    ]


def test_parse_a_partial_compile_with_spaces_in_paths() -> None:
    log = compiler_log.parse(logs.PARTIAL_16)
    assert log.compiled and (log.total, log.on_edgetpu, log.on_cpu) == (6, 1, 5)
    assert log.input_model == "/data/models/leaky middle.tflite"
    assert log.output_model == "/data/out/leaky middle_edgetpu.tflite"
    assert len(log.rows) == 6 and log.table_total == 6
    assert ("LEAKY_RELU", 1, "Operation not supported") in [(r.op, r.count, r.status) for r in log.rows]


def test_parse_the_operation_log_file_and_every_status() -> None:
    log = compiler_log.parse(logs.LOG_FILE_15)
    assert log.version == "15.0.340273435" and not log.compiled and log.failure is None
    assert log.input_model == "model.tflite" and log.output_model == "./EdgeTPU/model_edgetpu.tflite"
    statuses = {r.status for r in log.rows}
    assert statuses == {
        cov.VERSION_NOT_SUPPORTED,
        cov.MAPPED,
        MORE,
        cov.UNSPECIFIED,
        cov.UNSUPPORTED_TYPE,
        cov.UNSUPPORTED_RANK,
        cov.NOT_CONSTANT,
    }
    assert statuses <= set(cov.STATUSES)
    assert log.table_total == 44 and log.mapped == 31


def test_parse_stdout_without_the_table() -> None:
    log = compiler_log.parse(logs.NO_TABLE_15)
    assert log.compiled and log.rows == () and (log.total, log.on_edgetpu, log.on_cpu) == (44, 31, 13)


@pytest.mark.parametrize(
    ("text", "failure", "kind"),
    [
        (logs.NOT_QUANTIZED, "Model not quantized", "not_quantized"),
        (
            logs.OP_VERSION_16,
            "Didn't find op for builtin opcode 'FULLY_CONNECTED' version '12'",
            "op_version",
        ),
        (logs.INTERNAL_14, "Internal compiler error. Aborting!", "internal"),
        (
            logs.DYNAMIC_16,
            cov.DYNAMIC + " (Model failed in Tflite interpreter. Please ensure model can be loaded/run in "
            "Tflite interpreter.)",
            "failed",
        ),
        (logs.TIMEOUT_16, "Compilation timeout. This is usually caused by large activations.", "timeout"),
        (logs.BARE_FAILURE_16, "Compilation failed!", "failed"),
    ],
)
def test_parse_failures_to_one_line(text: str, failure: str, kind: str) -> None:
    log = compiler_log.parse(text)
    assert not log.compiled
    assert log.failure == failure and "\n" not in failure
    assert log.failure_kind == kind


def _offline(*ops: tuple[str, str]) -> Coverage:
    return Coverage(
        "edgetpu",
        "offline",
        tuple(OpPlacement(i, op, DELEGATE if r == cov.MAPPED else CPU, r) for i, (op, r) in enumerate(ops)),
    )


def test_compiler_table_to_per_op_coverage_agreeing() -> None:
    offline = _offline(
        ("CONV_2D", cov.MAPPED),
        ("LEAKY_RELU", cov.NOT_SUPPORTED),
        ("CONV_2D", MORE),
        ("MAX_POOL_2D", MORE),
        ("RESHAPE", MORE),
        ("FULLY_CONNECTED", MORE),
    )
    compiled, disagreements = compiler_log.to_coverage(compiler_log.parse(logs.PARTIAL_16), offline)
    assert compiled.source == "compiler" and compiled.delegate == "edgetpu"
    assert [(o.op, o.placement, o.reason) for o in compiled.ops] == [
        (o.op, o.placement, o.reason) for o in offline.ops
    ]
    assert disagreements == ()
    assert compiled.summary() == "1 of 6 ops on edgetpu, 5 on the CPU"


def test_compiler_table_to_per_op_coverage_disagreeing() -> None:
    """The offline analysis maps all 8 ops; the compiler (knowing more) leaves RESHAPE out."""
    text = logs.ALL_MAPPED_16.replace(
        "RESHAPE                        1          Mapped to Edge TPU",
        "RESHAPE                        1          " + cov.UNSPECIFIED,
    ).replace(
        "FULLY_CONNECTED                2          Mapped to Edge TPU",
        "FULLY_CONNECTED                2          " + MORE,
    )
    names = ["CONV_2D", "CONV_2D", "MAX_POOL_2D", "CONV_2D", "MAX_POOL_2D", "RESHAPE"]
    offline = _offline(
        *[(n, cov.MAPPED) for n in names], ("FULLY_CONNECTED", cov.MAPPED), ("FULLY_CONNECTED", cov.MAPPED)
    )
    compiled, disagreements = compiler_log.to_coverage(compiler_log.parse(text), offline)
    assert [o.placement for o in compiled.ops] == [DELEGATE] * 5 + [CPU] * 3
    assert compiled.ops[5].reason == cov.UNSPECIFIED
    assert disagreements == (
        "ops on the Edge TPU: offline 8 of 8, compiler 5 of 8",
        f"op 5 RESHAPE: offline delegate (Mapped to Edge TPU), compiler cpu ({cov.UNSPECIFIED})",
        f"op 6 FULLY_CONNECTED: offline delegate (Mapped to Edge TPU), compiler cpu ({MORE})",
        f"op 7 FULLY_CONNECTED: offline delegate (Mapped to Edge TPU), compiler cpu ({MORE})",
    )


def test_compiler_table_that_does_not_fit_the_model_says_so() -> None:
    offline = _offline(("CONV_2D", cov.MAPPED), ("SOFTMAX", cov.MAPPED))
    compiled, _ = compiler_log.to_coverage(compiler_log.parse(logs.ALL_MAPPED_16), offline)
    assert compiled.ops[1].reason == "not in the compiler's table" and compiled.ops[1].placement == CPU
    assert any("CONV_2D: the model has 1, the compiler's table 3" in n for n in compiled.notes)
    assert any("RESHAPE: 1 in the compiler's table, none in the model" in n for n in compiled.notes)


# --- running the compiler -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def student(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return models.student(tmp_path_factory.mktemp("edgetpu-compile") / "student int8 ü.tflite")


@pytest.fixture
def fake_compiler(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Path]:
    """``edgetpu_compiler`` on PATH (the stand-in), its argv record and its scenario file."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    exe = bin_dir / "edgetpu_compiler"
    exe.write_text(f"#!{sys.executable}\n" + FAKE.read_text())
    exe.chmod(exe.stat().st_mode | stat.S_IXUSR)
    argv, scenario = tmp_path / "argv.jsonl", tmp_path / "scenario.json"
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}")
    monkeypatch.setenv("EDGEQ_FAKE_EDGETPU_ARGV", str(argv))
    monkeypatch.setenv("EDGEQ_FAKE_EDGETPU_SCENARIO", str(scenario))
    scenario.write_text("{}")
    return {"argv": argv, "scenario": scenario}


def _calls(record: Path) -> list[list[str]]:
    return [json.loads(line) for line in record.read_text().splitlines()] if record.exists() else []


def test_without_the_compiler_one_line_says_what_to_install(
    student: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    with pytest.raises(UserInputError) as err:
        get_delegate("edgetpu").compile(student, tmp_path / "out")
    assert err.value.message.startswith("edgetpu_compiler is not installed on this host")
    assert "edgetpu-compiler" in err.value.hint and "x86-64" in err.value.hint
    assert "apt" in err.value.hint and "edgeq inspect" in err.value.hint
    assert not (tmp_path / "out").exists()


def test_compile_runs_the_compiler_with_pinned_flags(
    student: Path, tmp_path: Path, fake_compiler: dict[str, Path]
) -> None:
    out = tmp_path / "out dir"
    result = get_delegate("edgetpu").compile(student, out, timeout_s=120)
    assert result.delegate == "edgetpu" and result.compiler == "edgetpu_compiler 16.0.384591198"
    assert result.model == out / "student int8 ü_edgetpu.tflite" and result.model.is_file()
    assert sorted(p.name for p in out.iterdir()) == [
        "student int8 ü_edgetpu.log",
        "student int8 ü_edgetpu.tflite",
    ]
    compiled = tflite.read_model(result.model)
    assert [compiled.op_name(op) for op in compiled.subgraph.operators] == ["edgetpu-custom-op"]
    assert result.coverage is not None and result.coverage.source == "compiler"
    assert result.coverage.summary() == "8 of 8 ops on edgetpu, 0 on the CPU"
    assert result.disagreements == ()
    assert "Number of Edge TPU subgraphs: 1" in result.log
    version_call, compile_call = _calls(fake_compiler["argv"])
    assert version_call == ["--version"]
    assert compile_call[:4] == ["-s", "-m", "14", "-t"] and compile_call[4] == "120"
    assert compile_call[5] == "-o" and compile_call[-1] == str(student.resolve())
    assert "-a" not in compile_call and "-n" not in compile_call and "-d" not in compile_call
    assert result.to_dict()["coverage"]["source"] == "compiler"


def test_compile_reports_where_the_compiler_disagrees(
    student: Path, tmp_path: Path, fake_compiler: dict[str, Path]
) -> None:
    fake_compiler["scenario"].write_text(json.dumps({"statuses": {"5": cov.UNSPECIFIED}}))
    result = get_delegate("edgetpu").compile(student, tmp_path / "out")
    assert result.coverage is not None
    assert result.coverage.summary() == "5 of 8 ops on edgetpu, 3 on the CPU"
    assert result.disagreements[0] == "ops on the Edge TPU: offline 8 of 8, compiler 5 of 8"
    assert result.disagreements[1] == (
        f"op 5 RESHAPE: offline delegate (Mapped to Edge TPU), compiler cpu ({cov.UNSPECIFIED})"
    )
    assert len(result.disagreements) == 4
    compiled = tflite.read_model(result.model)
    assert [compiled.op_name(op) for op in compiled.subgraph.operators] == [
        "edgetpu-custom-op",
        "RESHAPE",
        "FULLY_CONNECTED",
        "FULLY_CONNECTED",
    ]


@pytest.mark.parametrize(
    ("failure", "says", "hint"),
    [
        ("not_quantized", "could not compile student int8 ü.tflite: Model not quantized", "edgeq export"),
        ("op_version", "Didn't find op for builtin opcode 'FULLY_CONNECTED' version '12'", "older"),
        ("internal", "Internal compiler error. Aborting!", "crashed"),
        ("dynamic", cov.DYNAMIC, "fix what the compiler names"),
        ("timeout", "Compilation timeout. This is usually caused by large activations.", "--timeout"),
    ],
)
def test_compiler_failures_are_one_line(
    student: Path, tmp_path: Path, fake_compiler: dict[str, Path], failure: str, says: str, hint: str
) -> None:
    fake_compiler["scenario"].write_text(json.dumps({"failure": failure}))
    out = tmp_path / "out"
    with pytest.raises(UserInputError) as err:
        get_delegate("edgetpu").compile(student, out)
    assert err.value.message.startswith(
        "edgetpu_compiler 16.0.384591198 could not compile student int8 ü.tflite: "
    )
    assert says in err.value.message and "\n" not in err.value.message
    assert hint in err.value.hint
    assert list(out.iterdir()) == []  # nothing half-written, no work directory left


def test_a_compiler_that_hangs_is_stopped(
    student: Path, tmp_path: Path, fake_compiler: dict[str, Path]
) -> None:
    pid_file = tmp_path / "compiler.pid"
    fake_compiler["scenario"].write_text(json.dumps({"failure": "hang", "pid_file": str(pid_file)}))
    t0 = time.monotonic()
    with pytest.raises(UserInputError) as err:
        get_delegate("edgetpu").compile(student, tmp_path / "out", timeout_s=1)
    assert time.monotonic() - t0 < 30
    assert err.value.message == "edgetpu_compiler did not finish compiling student int8 ü.tflite within 1 s"
    assert "--timeout" in err.value.hint
    assert list((tmp_path / "out").iterdir()) == []
    with pytest.raises(ProcessLookupError):  # killed and reaped, not left running
        os.kill(int(pid_file.read_text()), 0)


def test_a_float_model_is_refused_before_the_compiler_runs(
    tmp_path: Path, fake_compiler: dict[str, Path]
) -> None:
    model = models.float_model(tmp_path / "float.tflite")
    with pytest.raises(UserInputError, match="float.tflite is not quantized"):
        get_delegate("edgetpu").compile(model, tmp_path / "out")
    assert _calls(fake_compiler["argv"]) == []


def test_an_already_compiled_model_is_refused(
    student: Path, tmp_path: Path, fake_compiler: dict[str, Path]
) -> None:
    first = get_delegate("edgetpu").compile(student, tmp_path / "out")
    with pytest.raises(UserInputError, match="already compiled for the Edge TPU"):
        get_delegate("edgetpu").compile(first.model, tmp_path / "again")
    offline = get_delegate("edgetpu").coverage(first.model)
    assert offline.ops[0] == OpPlacement(0, "edgetpu-custom-op", DELEGATE, cov.MAPPED)
    assert any("already compiled" in n for n in offline.notes)
