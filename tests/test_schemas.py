"""The published JSON Schemas (docs/schemas/) match the Result and Report classes, and files edgeq
writes validate against them."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import jsonschema
import pytest
from support_profile import profile

from edgeq.errors import UserInputError
from edgeq.result import Result

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "scripts"))

from gen_schemas import published  # noqa: E402


def schema(name: str) -> dict:
    return json.loads((REPO / "docs" / "schemas" / f"{name}.schema.json").read_text())


def validate(instance: dict, name: str) -> None:
    jsonschema.Draft202012Validator(schema(name)).validate(instance)


def test_published_schemas_match_the_classes() -> None:
    for file_name, text in published().items():
        on_disk = (REPO / "docs" / "schemas" / file_name).read_text()
        assert on_disk == text, f"{file_name} is stale: run scripts/gen_schemas.py"


def test_a_real_result_validates_and_round_trips(
    tiny_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EDGEQ_HOME", str(tmp_path / "home"))
    raw = profile(tiny_model, runs=20, warmup=2)
    validate(raw, "edgeq.result-1")
    saved = tmp_path / "result.json"
    Result.from_dict(raw).save(saved)
    assert Result.load(saved).to_dict() == raw
    for key in ("latency_us", "memory", "execution", "device", "model", "spec", "hashes"):
        assert key in raw
    assert raw["hashes"]["model"] == raw["model"]["sha256"] and len(raw["hashes"]["spec"]) == 64


def test_the_schema_is_strict(tiny_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EDGEQ_HOME", str(tmp_path / "home"))
    raw = profile(tiny_model, runs=5, warmup=0)
    for bad in (
        {**raw, "latency": raw["latency_us"]},  # an unknown key
        {k: v for k, v in raw.items() if k != "latency_us"},  # a missing one
        {**raw, "schema": "edgeq.result/2"},
        {**raw, "init_ms": "fast"},
    ):
        with pytest.raises(jsonschema.ValidationError):
            validate(bad, "edgeq.result-1")
        with pytest.raises(UserInputError) as info:
            Result.from_dict(bad, "result.json")
        assert "\n" not in info.value.message
