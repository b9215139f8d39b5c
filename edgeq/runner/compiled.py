"""LiteRT's CompiledModel API behind the subset of the Interpreter interface the runner uses.

``--runtime ai-edge-litert-compiled`` measures the path LiteRT's own benchmark
(``ai_edge_litert/tools/benchmark_litert_model.py``) and its accelerators (GPU, NPU dispatch) use:
``CompiledModel`` with the CPU accelerator, timed around ``run_by_name`` exactly as that tool does.
The Interpreter path (the default) is what tflite-runtime and tf.lite share, so it stays the default.
"""

from __future__ import annotations

from typing import Any, Dict, List

import numpy as np


class FixedShapeInterpreter:
    """The Interpreter surface shared by runtimes that compile a model for its shapes: details are
    fixed lists (``_inputs``/``_outputs``), inputs cannot be resized, and ``set_tensor`` checks the
    shape before ``_write_input`` hands the bytes to the runtime."""

    _inputs: List[Dict[str, Any]]
    _outputs: List[Dict[str, Any]]
    _resize_error = "resizing inputs is not supported on this path"

    def get_input_details(self) -> List[Dict[str, Any]]:
        return [dict(d) for d in self._inputs]

    def get_output_details(self) -> List[Dict[str, Any]]:
        return [dict(d) for d in self._outputs]

    def allocate_tensors(self) -> None:
        return None  # buffers were created with the model

    def resize_tensor_input(self, index: int, shape: Any, strict: bool = False) -> None:
        raise ValueError(self._resize_error)

    def set_tensor(self, index: int, value: np.ndarray) -> None:
        d = self._inputs[index]
        if tuple(value.shape) != tuple(int(n) for n in d["shape"]):
            raise ValueError("input %d takes shape %s, got %s" % (index, tuple(d["shape"]), value.shape))
        self._write_input(index, np.ascontiguousarray(value, dtype=d["dtype"]))

    def _write_input(self, index: int, value: np.ndarray) -> None:
        raise NotImplementedError


class CompiledModelInterpreter(FixedShapeInterpreter):
    """``Interpreter(model_path=..., num_threads=...)`` look-alike over ``CompiledModel``.

    Tensor details (dtype, shape, quantization) come from a plain Interpreter over the same file,
    read through the model's first signature so names and order match the CompiledModel's buffers.
    Inputs cannot be resized on this path.
    """

    def __init__(self, model_path: str, num_threads: int = 1) -> None:
        from ai_edge_litert.compiled_model import CompiledModel
        from ai_edge_litert.environment import Environment, EnvironmentOptions
        from ai_edge_litert.hardware_accelerator import HardwareAccelerator
        from ai_edge_litert.interpreter import Interpreter, OpResolverType
        from ai_edge_litert.options import CpuOptions, Options

        # Same environment and options as benchmark_litert_model.py with its defaults (CPU only).
        env = Environment.create(options=EnvironmentOptions())
        options = Options(
            hardware_accelerators=HardwareAccelerator.CPU,
            cpu_options=CpuOptions(num_threads=num_threads),
        )
        self._model = CompiledModel.from_file(model_path, environment=env, options=options)
        signatures = self._model.get_signature_list()
        if not signatures:
            raise ValueError("the model has no signature; CompiledModel needs one")
        self._sig = next(iter(signatures))

        meta = Interpreter(
            model_path=model_path,
            experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES,
        )
        runner = meta.get_signature_runner(self._sig)
        in_details = runner.get_input_details()
        out_details = runner.get_output_details()
        self._in_names = list(signatures[self._sig]["inputs"])
        self._out_names = list(signatures[self._sig]["outputs"])
        self._inputs = self._details(self._in_names, in_details)
        self._outputs = self._details(self._out_names, out_details)
        self._in_buffers = {n: self._model.create_input_buffer_by_name(self._sig, n) for n in self._in_names}
        self._out_buffers = {
            n: self._model.create_output_buffer_by_name(self._sig, n) for n in self._out_names
        }

    @staticmethod
    def _details(names: List[str], by_name: Dict[str, Dict[str, Any]]) -> List[Dict[str, Any]]:
        out = []
        for i, name in enumerate(names):
            d = dict(by_name[name])
            d["index"] = i
            d["name"] = name
            # CompiledModel fixes dynamic dimensions (a Keras batch of -1) to the buffers' shape; the
            # runner must not try to resize them.
            d["shape_signature"] = d["shape"]
            out.append(d)
        return out

    _resize_error = "resizing inputs is not supported with ai-edge-litert-compiled"

    def _write_input(self, index: int, value: np.ndarray) -> None:
        self._in_buffers[self._inputs[index]["name"]].write(value)

    def invoke(self) -> None:
        # The very call benchmark_litert_model.py times.
        self._model.run_by_name(self._sig, self._in_buffers, self._out_buffers)

    def get_tensor(self, index: int) -> np.ndarray:
        d = self._outputs[index]
        shape = tuple(int(n) for n in d["shape"])
        count = int(np.prod(shape)) if shape else 1
        return self._out_buffers[d["name"]].read(count, d["dtype"]).reshape(shape)

    def is_fully_accelerated(self) -> bool:
        return bool(self._model.is_fully_accelerated())
