"""The ``edgeq`` command line: parse arguments, call :mod:`edgeq.api`, render. No logic of its own.

One module per group of commands (train, pipeline, measure, devices); ``app`` holds what they share.
"""

from __future__ import annotations

import gc
import sys
import traceback

from edgeq.cli import devices_commands, farm_commands, measure_commands, pipeline_command, train_commands
from edgeq.cli.app import app, err
from edgeq.errors import EXIT_BAD_INPUT, EXIT_INTERNAL, EXIT_INTERRUPTED, EdgeqError

app.command()(measure_commands.measure_options(pipeline_command.pipeline))
for command in (
    train_commands.train,
    train_commands.distill,
    train_commands.qat,
    train_commands.export,
    train_commands.inspect,
    train_commands.compile,
):
    app.command()(command)
app.command()(measure_commands.measure_options(measure_commands.profile))
app.command()(measure_commands.deploy)
app.add_typer(devices_commands.app, name="devices", help="Device profiles: list, show, check, set up.")
app.add_typer(
    farm_commands.app, name="farm", help="Device farm: run models x boards, results, baselines, verdicts."
)


# ------------------------------------------------------------------------------------------------
# Entry point


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; map errors to one line of what is wrong, one of what to do, and an exit code."""
    try:
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
