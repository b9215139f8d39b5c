"""The runner's minimal flatbuffer reader (edgeq/runner/modelfile.py, standard library only, for
devices without the flatbuffers package) agrees with the schema that ships with the runtime
(edgeq.tflite) on every model kind edgeq handles."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edgeq import tflite
from edgeq.runner.modelfile import ModelFileError, read_model


def _by_schema(path: Path) -> dict:
    f = tflite.read_model(path)
    sg, model = f.subgraph, f.model

    def details(indices: list[int]) -> list[dict]:
        out = []
        for i in indices:
            t = sg.tensors[i]
            q = t.quantization
            scales = list(q.scale) if q is not None and q.scale is not None else []
            zps = list(q.zeroPoint) if q is not None and q.zeroPoint is not None else []
            out.append(
                {
                    "name": (t.name or b"").decode(),
                    "dtype": np.dtype(tflite.tensor_type_name(t.type)),
                    "shape": [int(d) for d in t.shape],
                    "shape_signature": [
                        int(d) for d in (t.shapeSignature if t.shapeSignature is not None else t.shape)
                    ],
                    "quantization": (
                        float(scales[0]) if scales else 0.0,
                        int(zps[0]) if scales and zps else 0,
                    ),
                }
            )
        return out

    return {
        "custom_ops": tflite.custom_ops(model),
        "inputs": details(list(sg.inputs)),
        "outputs": details(list(sg.outputs)),
    }


def _by_runner(path: Path) -> dict:
    info = read_model(path.read_bytes())
    for part in ("inputs", "outputs"):
        info[part] = [
            {
                "name": d["name"],
                "dtype": d["dtype"],
                "shape": [int(x) for x in d["shape"]],
                "shape_signature": [int(x) for x in d["shape_signature"]],
                "quantization": (pytest.approx(d["quantization"][0]), d["quantization"][1]),
            }
            for d in info[part]
        ]
    return info


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory, tiny_model: Path) -> dict[str, Path]:
    from edgeq.export.convert import to_float_tflite
    from edgeq.ops import rewrite
    from edgeq.tfenv import keras

    d = tmp_path_factory.mktemp("modelfile")
    k = keras()
    k.utils.set_random_seed(0)
    m = k.Sequential([k.layers.Input((6,)), k.layers.Dense(4, activation="relu"), k.layers.Dense(3)])
    (d / "float.tflite").write_bytes(to_float_tflite(m))
    ternary = d / "ternary.tflite"
    rewrite.rewrite_file(tiny_model, ternary)
    return {"int8": tiny_model, "float": d / "float.tflite", "ternary": ternary}


@pytest.mark.parametrize("kind", ["int8", "float", "ternary"])
def test_the_runner_reads_what_the_schema_reads(kind: str, models: dict[str, Path]) -> None:
    want = _by_schema(models[kind])
    got = _by_runner(models[kind])
    assert got == want
    if kind == "ternary":
        assert [name for _, name in got["custom_ops"]] == ["EDGEQ_TERNARY_CONV2D", "EDGEQ_TERNARY_FC"]


def test_damaged_files_fail_in_both(models: dict[str, Path], tmp_path: Path) -> None:
    data = models["int8"].read_bytes()
    for cut in (12, 100, 300):
        bad = tmp_path / f"cut{cut}.tflite"
        bad.write_bytes(data[:cut])
        with pytest.raises(ModelFileError):
            read_model(bad.read_bytes())
