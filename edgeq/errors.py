"""The errors a user can cause, each with what to do and a documented exit code.

Exit codes (also in the README):

====  =======================================================
0     success
2     bad input: a path, file, dataset, model or option is wrong
3     device failure: the device could not be reached or failed to run
4     gate failed: a quality gate (accuracy drop, regression) did not hold
70    internal error: a bug in edgeq (printed with its traceback)
130   interrupted (Ctrl-C)
====  =======================================================
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_BAD_INPUT = 2
EXIT_DEVICE = 3
EXIT_GATE = 4
EXIT_INTERNAL = 70
EXIT_INTERRUPTED = 130


class EdgeqError(Exception):
    """An error the user can act on: ``message`` says what is wrong, ``hint`` what to do."""

    exit_code = EXIT_BAD_INPUT

    def __init__(self, message: str, hint: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message


class UserInputError(EdgeqError):
    """A path, file, dataset, model or option given by the user is wrong."""

    exit_code = EXIT_BAD_INPUT


class DeviceError(EdgeqError):
    """The device could not be reached, set up, or failed while running."""

    exit_code = EXIT_DEVICE


class GateFailed(EdgeqError):
    """A quality gate did not hold (for example int8 accuracy dropped too far)."""

    exit_code = EXIT_GATE
