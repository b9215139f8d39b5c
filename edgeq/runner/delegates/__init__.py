"""The device side of each delegate: how the runner opens a model so that its ops run there.

Each module here offers ``open_model(model_path, spec, emitter) -> Opened`` (see :class:`Opened`),
and is picked by the spec's ``delegate``. The host side of a delegate (what can run, compiling)
lives in the top-level ``delegates/<name>/`` folder. Python 3.8, standard library, NumPy and the
device's runtime only.
"""

from __future__ import annotations

import importlib
from typing import Any, Dict, List, Optional

# spec.delegate -> module in this package
MODULES = {"none": "litert", "xnnpack": "litert", "edgetpu": "edgetpu", "openvino": "openvino"}


class Opened:
    """A model ready to invoke, and what the runner reports about how it runs.

    ``interp`` has the TFLite Interpreter's surface (get_input_details, get_output_details,
    set_tensor, invoke, get_tensor, resize_tensor_input, allocate_tensors). ``placement`` is the
    edgeq.placement JSON shape with ``"source": "device"``: where each op ran, from the runtime's own
    execution plan. ``threads`` is the thread count really in effect (None when the runtime does not
    say), ``notes`` facts for the result (e.g. which OpenVINO device was really used).
    """

    def __init__(
        self,
        interp: Any,
        init_ms: float,
        runtime: str,
        runtime_version: str,
        delegate: str,
        placement: Optional[Dict[str, Any]] = None,
        threads: Optional[int] = None,
        notes: Optional[List[str]] = None,
        details: Optional[Dict[str, Any]] = None,
    ) -> None:
        self.interp = interp
        self.init_ms = init_ms
        self.runtime = runtime
        self.runtime_version = runtime_version
        self.delegate = delegate
        self.placement = placement
        self.threads = threads
        self.notes = list(notes or [])
        self.details = dict(details or {})


def module_for(delegate: str) -> Any:
    return importlib.import_module("%s.%s" % (__name__, MODULES[delegate]))
