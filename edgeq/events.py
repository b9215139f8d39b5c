"""Progress events: plain dicts a long step hands to a callback (the CLI renders them, ``--json`` drops them)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

Event = dict[str, Any]
EventCallback = Callable[[Event], None]


def noop(_: Event) -> None:
    return None


def epoch_reporter(stage: str, on_event: EventCallback) -> Callable[[int, int, dict[str, float]], None]:
    """A training callback that turns each epoch's metrics into a ``{"stage", "epoch", ...}`` event."""

    def cb(epoch: int, epochs: int, logs: dict[str, float]) -> None:
        on_event({"stage": stage, "epoch": epoch, "epochs": epochs, **logs})

    return cb
