"""``edgeq farm …``: run a farm, list and show runs, export, set baselines, compare. Mounted by ``edgeq.cli``.

Progress goes to stderr (a live table per board on a terminal, one line per event otherwise);
``--json`` prints machine-readable output on stdout (``farm run``: JSON lines, one per committed
result and board state, the last one the ``summary``). Exit codes: 0, 2 bad input, 3 a board failed,
4 a verdict regressed.
"""

from __future__ import annotations

import json
import signal
import sys
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from edgeq import api
from edgeq.cli.app import JsonOpt, ProfilesOpt, err, out, table
from edgeq.errors import DeviceError, GateFailed

if TYPE_CHECKING:
    from rich.live import Live
    from rich.table import Table

app = typer.Typer(
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
baseline_app = typer.Typer(
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
app.add_typer(baseline_app, name="baseline", help="Name a run as the baseline later runs are compared with.")

DbOpt = Annotated[
    str | None,
    typer.Option(
        "--db", help="Results store: a path, sqlite:///PATH or postgresql://USER@HOST/DB (else EDGEQ_DB)."
    ),
]
RunArg = Annotated[str, typer.Argument(help="A run id, 'latest', or a baseline name.")]

_STYLE = {
    "done": "green",
    "ok": "green",
    "measuring": "cyan",
    "waiting": "yellow",
    "busy": "bold red",
    "failed": "bold red",
    "skipped": "dim",
    "interrupted": "yellow",
}
_JSON_EVENTS = ("run", "board", "measure", "result", "retry", "remeasure", "warning")


class FarmProgress:
    """The run's events → a live table per board (terminal) or one line per event, on stderr;
    with ``as_json`` also JSON lines on stdout. Called from every board's thread."""

    def __init__(self, as_json: bool) -> None:
        self.as_json = as_json
        self.lock = threading.Lock()
        self.rows: dict[str, dict[str, Any]] = {}
        self.pairs_total = 0
        self.live: Live | None = None
        self.started = time.monotonic()

    def __call__(self, e: dict[str, Any]) -> None:
        with self.lock:
            if self.as_json and e.get("event") in _JSON_EVENTS:
                sys.stdout.write(json.dumps(e, default=str) + "\n")
                sys.stdout.flush()
            self._update(e)

    def _row(self, board: str) -> dict[str, Any]:
        return self.rows.setdefault(
            board,
            {"state": "queued", "model": "", "done": 0, "failed": 0, "note": "", "since": time.monotonic()},
        )

    def _update(self, e: dict[str, Any]) -> None:
        kind = e.get("event")
        if kind == "run":
            for b in e.get("boards", []):
                self._row(b)
            what = "resuming" if e.get("resumed") else "starting"
            err.print(
                f"[bold]farm[/]: {what} run {e['run']} ({e['pairs']} pairs x {e['rounds']} round(s), "
                f"{len(e.get('boards', []))} boards; {e['done_before']} rounds already in {e['store']})",
                soft_wrap=True,
            )
            if err.is_terminal:
                from rich.live import Live

                self.live = Live(self._table(), console=err, refresh_per_second=4, transient=False)
                self.live.start()
            return
        board = e.get("board")
        if board is None:
            if kind == "remeasure":
                self._line(f"[bold]farm[/]: measuring again (inconclusive): {len(e['pairs'])} pair(s)")
            elif kind == "warning":
                self._line(f"[yellow]warning:[/] {e.get('message')}")
            return
        row = self._row(board)
        if kind == "board":
            row["state"], row["note"] = e.get("state", ""), e.get("message", "")
            if self.live is None and e.get("state") not in ("locking", "connecting"):
                self._line(f"[bold]{board}[/]: {row['state']}" + (f" — {row['note']}" if row["note"] else ""))
        elif kind == "measure":
            row["state"], row["model"] = "measuring", e.get("model", "")
            row["note"] = f"round {e.get('round')}" + (
                f", attempt {e['attempt']}" if e.get("attempt", 1) > 1 else ""
            )
        elif kind == "progress":
            row["note"] = f"{e.get('phase')} {e.get('done')}/{e.get('total')}"
        elif kind == "deploy":
            row["note"] = f"deployed {e.get('name')} ({e.get('bytes_sent')} B)"
        elif kind == "retry":
            row["note"] = f"{e.get('kind')}: retrying in {e.get('delay_s'):.1f} s"
        elif kind == "result":
            if e.get("status") == "ok":
                row["done"] += 1
                text = f"{e['model']}: ok, p50 {e.get('latency_p50_us', 0):.1f} µs (round {e.get('round')})"
            else:
                row["failed"] += 1
                text = f"{e['model']}: [red]{e.get('status')}[/] (attempt {e.get('attempt')}): {e.get('message')}"
            row["note"] = text
            if self.live is None:
                self._line(f"[bold]{board}[/]: {text}")
        elif kind == "warning":
            self._line(f"[yellow]warning[/] ({board}): {e.get('message')}")
        if self.live is not None:
            self.live.update(self._table())

    def _line(self, text: str) -> None:
        if self.live is not None:
            self.live.console.print(text, soft_wrap=True)
        else:
            err.print(text, soft_wrap=True, highlight=False)

    def _table(self) -> Table:
        t = table(show_edge=False, pad_edge=False, box=None)
        for col in ("board", "state", "model", "ok", "failed", "now"):
            t.add_column(col, no_wrap=col != "now", overflow="ellipsis")
        for name, r in sorted(self.rows.items()):
            style = _STYLE.get(r["state"], "")
            t.add_row(name, f"[{style}]{r['state']}[/]" if style else r["state"], r["model"], str(r["done"]),
                      str(r["failed"]), r["note"])  # fmt: skip
        return t

    def close(self) -> None:
        with self.lock:
            if self.live is not None:
                self.live.update(self._table())
                self.live.stop()
                self.live = None


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


@app.command("run")
def run_cmd(
    farm_toml: Annotated[
        Path, typer.Argument(help="The farm: FARM.toml (docs/farm.md).", metavar="FARM.toml")
    ],
    db: DbOpt = None,
    against: Annotated[
        str | None,
        typer.Option(help="Compare with this baseline during the run (re-measures inconclusive pairs)."),
    ] = None,
    junit: Annotated[
        Path | None, typer.Option(help="Write the verdicts as JUnit XML (needs --against).")
    ] = None,
    html: Annotated[Path | None, typer.Option(help="Write the self-contained HTML report.")] = None,
    fresh: Annotated[
        bool, typer.Option(help="Start a new run even if an unfinished one of this farm exists.")
    ] = False,
    dry_run: Annotated[
        bool,
        typer.Option(
            "--dry-run", help="Check FARM.toml and show each pair's resolved settings; measure nothing."
        ),
    ] = False,
    profiles: ProfilesOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Measure every model on every board of the farm, boards in parallel; rerun to resume a killed run."""
    if dry_run:
        _show_plan(api.farm_plan(farm_toml, tuple(profiles or ())), as_json)
        return
    progress = FarmProgress(as_json)
    # SIGTERM (a CI job cancelled, a service stopped) ends the run as Ctrl-C does: boards are
    # closed, labgrid places and board locks released, the run marked interrupted.
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        outcome = api.farm_run(
            farm_toml,
            db=db,
            against=against,
            fresh=fresh,
            profiles=tuple(profiles or ()),
            junit=junit,
            html=html,
            on_event=progress,
        )
    finally:
        signal.signal(signal.SIGTERM, previous)
        progress.close()
    summary = outcome.to_dict()
    if as_json:
        sys.stdout.write(json.dumps(summary, default=str) + "\n")
        sys.stdout.flush()
    else:
        _render_outcome(outcome)
    _exit_for(outcome)


def _show_plan(plan: Any, as_json: bool) -> None:
    if as_json:
        print(json.dumps(plan.to_dict(), indent=2))
        return
    t = table(show_edge=False, pad_edge=False)
    for col in ("model", "device", "address", "delegate", "runs", "warmup", "threads", "timeout s"):
        t.add_column(col, no_wrap=True)
    for p in plan.pairs:
        sp = p.spec
        t.add_row(p.model.name, p.device.name, p.device.profile.address, sp.delegate, str(sp.runs),
                  str(sp.warmup), str(sp.threads), f"{sp.timeout_s:g}")  # fmt: skip
    out.print(t)
    out.print(
        f"{plan.name}: {len(plan.pairs)} pairs x {plan.rounds} round(s), retries {plan.retries}; plan {plan.digest[:12]}"
    )


def _render_outcome(outcome: Any) -> None:
    t = table(show_edge=False, pad_edge=False)
    for col in ("board", "state", "ok", "failed", "busy s", "note"):
        t.add_column(col, no_wrap=col != "note")
    for name, b in sorted(outcome.boards.items()):
        style = _STYLE.get(b.state, "")
        t.add_row(name, f"[{style}]{b.state}[/]" if style else b.state, str(b.measured), str(b.failures),
                  f"{b.busy_s:.1f}", b.message)  # fmt: skip
    out.print(t)
    run = outcome.run
    out.print(
        f"run {run.id} ({run.farm}): {run.status} in {outcome.wall_s:.1f} s"
        + (f"; not measured: {len(outcome.incomplete)} pair(s)" if outcome.incomplete else "")
    )
    if outcome.comparison is not None:
        _render_comparison(outcome.comparison)


def _render_comparison(c: Any) -> None:
    counts = ", ".join(f"{k} {v}" for k, v in c.counts().items())
    out.print(f"against {c.against} (run {c.baseline_run_id}): {counts}")
    for v in c.verdicts:
        if v.outcome != "unchanged":
            style = {"regressed": "bold red", "improved": "green", "inconclusive": "yellow"}.get(
                v.outcome, ""
            )
            out.print(f"  [{style}]{v.outcome:<12}[/] {v.model} on {v.device}: {v.summary()}", soft_wrap=True)
    for p in c.problems:
        out.print(f"  [dim]{p.kind:<12}[/] {p.model} on {p.device}: {p.message}", soft_wrap=True)


def _exit_for(outcome: Any) -> None:
    code = outcome.exit_code
    if code == 4:
        c = outcome.comparison
        worst = ", ".join(f"{v.metric} of {v.model} on {v.device}" for v in c.regressions[:5])
        raise GateFailed(
            f"{len(c.regressions)} verdict(s) regressed against {c.against}: {worst}",
            "see the verdicts above (or `edgeq farm compare RUN --html report.html`)",
        )
    if code == 3:
        bad = [f"{b.device} ({b.state}: {b.message})" for b in outcome.failed_boards]
        if not bad:
            bad = [f"{m} on {d}" for m, d in outcome.failed_pairs[:5]]
            what = f"{len(outcome.failed_pairs)} pair(s) failed every attempt: " + "; ".join(bad)
        else:
            what = f"{len(bad)} board(s) failed: " + "; ".join(bad)
        raise DeviceError(
            what[:2000],
            "fix the board (edgeq devices check NAME) and run the farm again: completed pairs are not measured again",
        )


@app.command("runs")
def runs_cmd(
    db: DbOpt = None,
    farm: Annotated[str | None, typer.Option(help="Only runs of this farm.")] = None,
    limit: Annotated[int, typer.Option(help="At most this many runs.")] = 50,
    as_json: JsonOpt = False,
) -> None:
    """The runs in the results store, newest first."""
    rows = api.farm_runs(db=db, farm=farm, limit=limit)
    if as_json:
        print(json.dumps([r.to_dict() for r in rows], indent=2))
        return
    t = table(show_edge=False, pad_edge=False)
    for col in ("run", "farm", "status", "started", "host", "baselines"):
        t.add_column(col, no_wrap=True)
    for r in rows:
        t.add_row(
            str(r.id),
            r.farm,
            r.status,
            r.started_at.strftime("%Y-%m-%d %H:%M:%S"),
            r.host,
            ", ".join(r.baselines),
        )
    out.print(t)


@app.command("show")
def show_cmd(run: RunArg, db: DbOpt = None, as_json: JsonOpt = False) -> None:
    """A run: one line per (model, device) with its rounds, figures and failures."""
    data = api.farm_show(run, db=db)
    if as_json:
        print(json.dumps(data, indent=2, default=str))
        return
    r = data["run"]
    out.print(f"run {r['id']} ({r['farm']}): {r['status']}, started {r['started_at']} on {r['host']}")
    t = table(show_edge=False, pad_edge=False)
    for col in ("model", "device", "status", "rounds", "p50 µs", "energy mJ", "top-1 %", "peak kB", "note"):
        t.add_column(col, no_wrap=col != "note")
    for p in data["pairs"]:
        p50 = p["latency_p50_us"]
        t.add_row(
            p["model"], p["device"], p["status"], str(p["rounds"]),
            " ".join(f"{v:.1f}" for v in p50) if p50 else "",
            f"{p['energy_mj']:.4g}" if p["energy_mj"] is not None else "",
            f"{p['accuracy_pct']:.2f}" if p["accuracy_pct"] is not None else "",
            str(p["model_peak_rss_kb"] or p["peak_rss_kb"] or ""),
            p["message"] or (f"{p['failures']} failed attempt(s)" if p["failures"] else ""),
        )  # fmt: skip
    out.print(t)


@app.command("export")
def export_cmd(
    run: RunArg,
    db: DbOpt = None,
    output: Annotated[
        Path | None, typer.Option("--out", help="Write to this file instead of stdout.")
    ] = None,
) -> None:
    """A run and every result whole, raw samples included, as JSON (edgeq.farm.export/1)."""
    data = api.farm_export(run, db=db)
    text = json.dumps(data, indent=2, default=str) + "\n"
    if output is None:
        sys.stdout.write(text)
        return
    from edgeq.files import atomic_write, check_writable_file

    check_writable_file(output, "--out")
    atomic_write(output, text)
    err.print(f"wrote {output}")


@baseline_app.command("set")
def baseline_set_cmd(
    run: RunArg,
    name: Annotated[str, typer.Option(help="The baseline's name.")] = "main",
    db: DbOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Point the baseline NAME (default main) at RUN."""
    info = api.farm_baseline_set(run, name=name, db=db)
    if as_json:
        print(json.dumps(info.to_dict(), indent=2))
        return
    out.print(f"baseline {name} → run {info.id} ({info.farm}, {info.status})")


@app.command("compare")
def compare_cmd(
    run: RunArg,
    against: Annotated[str, typer.Option(help="A baseline name or a run id.")] = "main",
    db: DbOpt = None,
    farm_toml: Annotated[
        Path | None,
        typer.Option("--farm", help="Take [thresholds] from this FARM.toml (default: the run's own)."),
    ] = None,
    junit: Annotated[Path | None, typer.Option(help="Write the verdicts as JUnit XML.")] = None,
    html: Annotated[Path | None, typer.Option(help="Write the self-contained HTML report.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Verdicts per model x device x metric against a baseline; exit 4 when any regressed."""
    c = api.farm_compare(run, against=against, db=db, farm_toml=farm_toml, junit=junit, html=html)
    if as_json:
        print(json.dumps(c.to_dict(), indent=2, default=str))
    else:
        _render_comparison(c)
    if c.gate_failed:
        worst = ", ".join(f"{v.metric} of {v.model} on {v.device}" for v in c.regressions[:5])
        raise GateFailed(
            f"{len(c.regressions)} verdict(s) regressed against {c.against}: {worst}",
            "see the verdicts above (or --html report.html)",
        )
