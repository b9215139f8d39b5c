"""Test support that ships with edgeq: stand-ins for what a build machine cannot have.

``emulated_sensors``: a sysfs tree with a board's power and thermal sensors (and a ``vcgencmd``)
kept alive by a writer that follows real CPU load; ``python -m edgeq.testing.emulated_sensors``.

This package imports only the standard library, NumPy and :mod:`edgeq.runner`, so it can be used
wherever the runner runs.
"""
