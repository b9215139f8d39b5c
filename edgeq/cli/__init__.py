"""The ``edgeq`` command line: parse arguments, call :mod:`edgeq.api`, render. No logic of its own.

One module per group of commands (train, pipeline, measure, devices); ``app`` holds what they share.
"""

from __future__ import annotations

import gc
import importlib
import sys
import traceback

from edgeq.cli.app import app, err
from edgeq.errors import EXIT_BAD_INPUT, EXIT_INTERNAL, EXIT_INTERRUPTED, EdgeqError

# The commands, in the order help lists them: name (also its function's) -> (module in edgeq.cli,
# takes the measurement options); then the groups: name -> (module, help).
_COMMANDS = {
    "pipeline": ("pipeline_command", True),
    "train": ("train_commands", False),
    "distill": ("train_commands", False),
    "qat": ("train_commands", False),
    "export": ("train_commands", False),
    "inspect": ("train_commands", False),
    "compile": ("train_commands", False),
    "profile": ("measure_commands", True),
    "deploy": ("measure_commands", False),
}
_GROUPS = {
    "devices": ("devices_commands", "Device profiles: list, show, check, set up, disconnect."),
    "farm": ("farm_commands", "Device farm: run models x boards, results, baselines, verdicts."),
}
_mounted: set[str] = set()


def _mount(argv: list[str]) -> None:
    """Add to ``app`` the command ``argv`` names, or every command when it names none (help,
    ``--version``, a mistyped name, shell completion). Importing and building the others would cost
    a short command like ``deploy`` a tenth of its time."""
    first = next((a for a in argv if not a.startswith("-")), None)
    names = [first] if first in _COMMANDS or first in _GROUPS else [*_COMMANDS, *_GROUPS]
    for name in names:
        if name in _mounted:
            continue
        _mounted.add(name)
        if name in _GROUPS:
            module, help_text = _GROUPS[name]
            app.add_typer(importlib.import_module(f"edgeq.cli.{module}").app, name=name, help=help_text)
            continue
        module, measured = _COMMANDS[name]
        command = getattr(importlib.import_module(f"edgeq.cli.{module}"), name)
        if measured:
            from edgeq.cli.measure_commands import measure_options

            command = measure_options(command)
        app.command()(command)


# ------------------------------------------------------------------------------------------------
# Entry point


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; map errors to one line of what is wrong, one of what to do, and an exit code."""
    try:
        _mount(sys.argv[1:] if argv is None else argv)
        # Typer prints usage errors itself (exit 2) and turns Ctrl-C into exit 130.
        app(args=argv, prog_name="edgeq", standalone_mode=True)
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else EXIT_BAD_INPUT)
    except EdgeqError as exc:
        err.print(f"[bold red]error:[/] {exc.message}", soft_wrap=True)
        if exc.hint:
            err.print(f"[bold]what to do:[/] {exc.hint}", soft_wrap=True)
        return exc.exit_code
    except KeyboardInterrupt:
        err.print("interrupted")
        return EXIT_INTERRUPTED
    except Exception:
        traceback.print_exc()
        err.print(
            "[bold red]internal error:[/] this is a bug in edgeq; please report it with the traceback above"
        )
        return EXIT_INTERNAL
    return 0


def entry() -> None:
    code = main()
    # The process ends here: the garbage collector's passes over every module's objects at shutdown
    # would cost a short command a tenth of its time (~50 ms here). Frozen objects are skipped by
    # them; atexit handlers and finalizers still run.
    gc.freeze()
    sys.exit(code)


if __name__ == "__main__":
    entry()
