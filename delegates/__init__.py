"""Delegates: one folder per accelerator (support policy, compile step, runtime options)."""
