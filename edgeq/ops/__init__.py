"""Custom int8 ops: ternary-weight FC and conv (EDGEQ_TERNARY_FC, EDGEQ_TERNARY_CONV2D).

- :mod:`edgeq.ops.ternary_format` — the data format (header, packed weights, qparams); NumPy only.
- :mod:`edgeq.ops.reference` — the bit-exact definition in NumPy; NumPy only.
- the ctypes bindings to the C kernels and the LiteRT runner live in :mod:`edgeq.runner.native`,
  which ships to devices; host code imports them from there.
- :mod:`edgeq.ops.build` — builds ``libedgeq_ops.so`` for the host or aarch64.
- :mod:`edgeq.ops.rewrite` — int8 FULLY_CONNECTED / CONV_2D → ternary custom ops in a ``.tflite``.
- :mod:`edgeq.ops.layers` — ``TernaryDense`` / ``TernaryConv2D`` for tf_keras (imports TensorFlow).

This package's ``__init__`` imports nothing heavy.
"""
