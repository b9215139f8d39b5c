"""Delegates: one folder per accelerator, each with the same inner shape.

``<name>/__init__.py``  the :class:`~edgeq.delegates.delegate.Delegate` object (``DELEGATE``)
``<name>/coverage.py``  what can run on it, decided offline from the ``.tflite`` file
``<name>/compile.py``   how a model is compiled for it (where there is a compile step)
``<name>/README.md``    what a user needs to know, and what the device needs installed

What the runner does on the device lives in ``edgeq/runner/delegates/<name>.py``: the runner is
shipped to the device alone (a zipapp of ``edgeq/runner``), so its half of a delegate must be inside
it. Adding a delegate: a folder here, its runner module, and one line in ``_NAMES`` below.
"""

from __future__ import annotations

import importlib

from edgeq.delegates.delegate import Delegate
from edgeq.errors import UserInputError

_NAMES = ("none", "xnnpack", "edgetpu", "openvino")


def names() -> tuple[str, ...]:
    return _NAMES


def get(name: str) -> Delegate:
    """The delegate called ``name``; an unknown name is one UserInputError listing the known ones."""
    if name not in _NAMES:
        raise UserInputError(f"unknown delegate {name!r}", "use one of: " + ", ".join(_NAMES))
    module = importlib.import_module(f"edgeq.delegates.{name}")
    delegate: Delegate = module.DELEGATE
    return delegate
