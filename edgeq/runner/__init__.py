"""The device-side runner: loads a .tflite model in the device's runtime and measures it.

This package runs ON the device. It imports only the standard library, NumPy and whichever TFLite
runtime the device has, and it must stay Python 3.8 syntax (the oldest Python a supported board
ships). The host ships it as one deterministic zipapp (``runner.pyz``, built by
:mod:`edgeq.runner_zip`) in which this package is named ``edgeq_runner``, so every import inside it
is relative.

Commands (see :mod:`.main`): ``run`` (measure a model as a MeasureSpec says), ``preflight`` (can this
spec run here), ``probe`` (runtimes), ``sensors`` (power sources, thermal zones, governors) and
``delegate-facts`` (what a delegate needs). Protocol: JSON lines on stdout. ``run`` prints throttled
``{"event": "progress", ...}`` lines and then exactly one ``{"event": "result", "result": {...}}``;
the others print only the result line.
A failure prints one ``{"event": "error", "kind": ..., "message": ..., "hint": ...}`` line and exits
with 2 (``bad_input``) or 3 (``runtime_missing`` / ``runtime_failure``). Anything else (runtime
logs, tracebacks) goes to stderr.
"""

RESULT_SCHEMA = "edgeq.result/1"
PROBE_SCHEMA = "edgeq.probe/1"
SENSORS_SCHEMA = "edgeq.sensors/1"
PREFLIGHT_SCHEMA = "edgeq.preflight/1"
DELEGATE_FACTS_SCHEMA = "edgeq.delegate-facts/1"
RUNNER_VERSION = "1"
