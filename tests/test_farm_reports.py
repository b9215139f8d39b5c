"""Farm reports: JUnit XML validated against the Ant (windyroad) and Jenkins JUnit schemas with lxml;
the HTML report opened in headless Chromium (Debian's package, driven by Playwright): no console
errors, no network request, the key elements there, a screenshot."""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Any

import pytest
from conftest import missing_prerequisite
from support_farmstore import BOARDS, MODELS, build_farm, make_result

from edgeq.farm import results_api as api
from edgeq.farm.reports.html import render_html, summary_of
from edgeq.farm.reports.junit import junit_bytes
from edgeq.farm.store import Store, open_store
from edgeq.farm.verdict import REGRESSED, Comparison, Thresholds, compare_results

SCHEMAS = Path(__file__).parent / "data" / "junit"
CHROMIUM = Path("/usr/bin/chromium")


@pytest.fixture
def farm(tmp_path: Path) -> tuple[Store, Comparison]:
    store = open_store(f"sqlite:///{tmp_path / 'farm.db'}")
    return store, build_farm(store)


def test_the_scenario_gives_the_verdicts_it_was_built_for(farm: tuple[Store, Comparison]) -> None:
    _, c = farm
    got = {(v.model, v.device, v.metric): v.outcome for v in c.verdicts if v.outcome != "unchanged"}
    assert got == {
        ("mobilenet", "pi5-a", "latency"): "regressed",
        ("mobilenet", "pi5-a", "energy"): "regressed",
        ("kws-ds-cnn", "jetson-orin", "latency"): "improved",
        ("kws-ds-cnn", "jetson-orin", "energy"): "improved",
        ("digits-cnn", "jetson-orin", "accuracy"): "regressed",
    }
    assert {(p.pair, p.kind) for p in c.problems} == {
        (("kws-ds-cnn", "pi5-a"), "timeout"),
        (("new-model", "pi5-a"), "no_baseline"),
    }
    assert c.gate_failed


# ------------------------------------------------------------------------------------------ JUnit


def _validate(xml: bytes) -> Any:
    from lxml import etree

    doc = etree.fromstring(xml)
    for name in ("JUnit.xsd", "jenkins-junit-10.xsd"):
        schema = etree.XMLSchema(etree.parse(str(SCHEMAS / name)))
        if not schema.validate(doc):
            raise AssertionError(f"{name}: {schema.error_log}")
    return doc


def test_junit_validates_against_the_junit_schemas(farm: tuple[Store, Comparison], tmp_path: Path) -> None:
    _, c = farm
    path = api.write_junit(c, tmp_path / "reports" / "farm.xml")
    doc = _validate(path.read_bytes())
    suites = doc.findall("testsuite")
    assert {s.get("name") for s in suites} == {f"{m} on {d}" for m in MODELS for d in BOARDS} | {
        "new-model on pi5-a"
    }
    cases = doc.findall("testsuite/testcase")
    assert len(cases) == len(c.verdicts) + len(c.problems)  # one per model × device × metric (+ measurement)
    failures = doc.findall("testsuite/testcase/failure")
    assert len(failures) == len(c.regressions) == 3
    assert sum(int(s.get("failures")) for s in suites) == 3
    mob = doc.find("testsuite[@name='mobilenet on pi5-a']")
    f = mob.find("testcase[@name='latency']/failure")
    assert (
        f.get("type") == REGRESSED
        and f.get("message").startswith("latency ")
        and "regressed" in f.get("message")
    )
    assert "model changed" in f.text and "why: significant" in f.text
    props = {p.get("name"): p.get("value") for p in mob.findall("properties/property")}
    assert props["latency.outcome"] == "regressed" and props["against"] == "main"
    assert float(props["latency.delta_pct"]) == pytest.approx(20, abs=3)
    assert float(props["latency.baseline_us"]) > 1000 and float(props["latency.p_value"]) < 1e-6
    for key in (
        "latency.p_runs",
        "latency.p_adjusted",
        "latency.ci_low_pct",
        "energy.current_mj",
        "accuracy.current_pct",
        "memory.current_kb",
    ):
        assert key in props
    err = doc.find("testsuite[@name='kws-ds-cnn on pi5-a']/testcase[@name='measurement']/error")
    assert (
        err.get("type") == "timeout" and err.get("message") == "timeout: no result within 600 s (3 attempts)"
    )
    skip = doc.find("testsuite[@name='new-model on pi5-a']/testcase[@name='measurement']/skipped")
    assert skip.get("message").startswith("no_baseline")
    acc = doc.find("testsuite[@name='digits-cnn on jetson-orin']/testcase[@name='accuracy']/failure")
    assert "-5.000 pt" in acc.get("message")


def test_junit_with_inconclusive_hostile_names_and_no_pairs() -> None:
    model = "a <b> & \"c\" 'd' ñ ✓"
    base = [make_result(n=8, model=model)]
    cur = [make_result(n=8, seed=1, model=model)]
    from support_farmstore import as_stored

    c = compare_results(
        [as_stored(r, model=model, device="dev\x01ice") for r in base],
        [as_stored(r, model=model, device="dev\x01ice") for r in cur]
        + [as_stored(make_result(), model="x", device="y")],
        Thresholds(),
        run_id=2,
        baseline_run_id=1,
        against="main",
    )
    doc = _validate(junit_bytes(c, hostname="ci runner 7"))
    skipped = doc.findall("testsuite/testcase/skipped")
    assert any(s.get("message", "").startswith("inconclusive: too few samples") for s in skipped)
    assert doc.find("testsuite").get("name").startswith(model)
    empty = compare_results([], [], run_id=3, baseline_run_id=1, against="main")
    assert _validate(junit_bytes(empty)).findall("testsuite") == []


# ------------------------------------------------------------------------------------------- HTML


def test_html_is_self_contained(farm: tuple[Store, Comparison]) -> None:
    store, c = farm
    page = render_html(store, c)
    assert summary_of(page) == {
        "run": c.run_id,
        "baseline_run": c.baseline_run_id,
        "gate_failed": True,
        "counts": c.counts(),
    }
    # nothing that could load: no src/href attributes, no CSS url(), no @import
    assert not re.search(r"\b(src|href)\s*=", page)
    assert "url(" not in page and "@import" not in page
    assert set(re.findall(r"https?://[^\s\"'<>]+", page)) == {
        "http://www.w3.org/2000/svg"
    }  # a namespace name


def _open_in_chromium(page_path: Path, screenshot: Path) -> dict[str, Any]:
    if not CHROMIUM.exists():
        missing_prerequisite("chromium is not installed (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    seen: dict[str, Any] = {"console": [], "errors": [], "requests": [], "blocked": []}
    url = page_path.resolve().as_uri()
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), headless=True)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.on("console", lambda m: seen["console"].append((m.type, m.text)))
            page.on("pageerror", lambda e: seen["errors"].append(str(e)))
            page.on("request", lambda r: seen["requests"].append(r.url))

            def route(r: Any) -> None:
                if r.request.url == url:
                    r.continue_()
                else:
                    seen["blocked"].append(r.request.url)
                    r.abort()

            page.route("**/*", route)
            page.goto(url, wait_until="load")
            page.wait_for_selector("body[data-ready='true']", timeout=10_000)
            seen["title"] = page.title()
            seen["h1"] = page.inner_text("h1")
            seen["rows"] = page.locator("#verdicts tbody tr").count()
            seen["boards"] = page.locator("section.board").evaluate_all(
                "els => els.map(e => e.dataset.device)"
            )
            seen["dist_cards"] = page.locator(".dist-card svg polygon.dist.current").count()
            seen["baseline_dists"] = page.locator(".dist-card svg polygon.dist.baseline").count()
            seen["points"] = page.locator(".scatter svg circle.point").count()
            seen["history_marks"] = page.locator("svg circle.run-mark").count()
            seen["svg_sizes"] = page.locator("svg.chart").evaluate_all(
                "els => els.map(e => [e.getBoundingClientRect().width, e.getBoundingClientRect().height])"
            )
            if seen["rows"]:
                page.click(".filters button[data-outcome='regressed']")
                seen["visible_after_filter"] = page.locator("#verdicts tbody tr:visible").count()
                page.click(".filters button[data-outcome='all']")
                seen["visible_all"] = page.locator("#verdicts tbody tr:visible").count()
            page.screenshot(path=str(screenshot), full_page=True)
        finally:
            browser.close()
    return seen


def test_html_report_renders_in_headless_chromium(farm: tuple[Store, Comparison], tmp_path: Path) -> None:
    store, c = farm
    path = api.write_html(store, c, tmp_path / "report dir" / "farm report.html")
    shot = tmp_path / "farm-report.png"
    seen = _open_in_chromium(path, shot)
    assert [m for m in seen["console"] if m[0] in ("error", "warning")] == [] and seen["errors"] == []
    assert seen["requests"] == [path.resolve().as_uri()] and seen["blocked"] == []
    assert seen["h1"].startswith("edgeq farm lab farm: run 5 against main (run 4)")
    assert seen["rows"] == len(c.verdicts)
    assert seen["visible_after_filter"] == len(c.regressions) and seen["visible_all"] == len(c.verdicts)
    assert sorted(seen["boards"]) == sorted(BOARDS)
    pairs_with_samples = len(MODELS) * len(BOARDS) - 1 + 1  # kws on pi5-a timed out; new-model is new
    assert seen["dist_cards"] == pairs_with_samples and seen["baseline_dists"] == pairs_with_samples - 1
    assert seen["points"] == pairs_with_samples
    assert seen["history_marks"] == 5 * (len(MODELS) * len(BOARDS) - 1) + 4 + 1  # runs per pair
    assert all(w > 200 and h > 100 for w, h in seen["svg_sizes"])
    assert shot.stat().st_size > 20_000
    keep = Path(__file__).parent.parent / "build" / "farm-report.png"
    keep.parent.mkdir(exist_ok=True)
    shutil.copy(shot, keep)  # for a human to look at (build/ is not in git)


def test_html_report_of_a_run_alone(farm: tuple[Store, Comparison], tmp_path: Path) -> None:
    store, _ = farm
    path = api.write_html(store, "main", tmp_path / "run.html")
    page = path.read_text()
    assert summary_of(page)["gate_failed"] is None and 'id="verdicts"' not in page
    seen = _open_in_chromium(path, tmp_path / "run.png")
    assert seen["errors"] == [] and [m for m in seen["console"] if m[0] == "error"] == []
    assert seen["requests"] == [path.resolve().as_uri()] and seen["rows"] == 0
    assert seen["baseline_dists"] == 0 and seen["dist_cards"] == len(MODELS) * len(BOARDS)


def test_runs_show_and_export_of_the_farm(farm: tuple[Store, Comparison]) -> None:
    store, c = farm
    assert [r.id for r in api.runs(store)] == [5, 4, 3, 2, 1] and api.runs(store)[1].baselines == ("main",)
    shown = api.show(store, "latest")
    assert shown["schema"] == "edgeq.farm.run/1" and shown["run"]["id"] == c.run_id
    pairs = {(p["model"], p["device"]): p for p in shown["pairs"]}
    assert len(pairs) == len(MODELS) * len(BOARDS) + 1
    timed_out = pairs[("kws-ds-cnn", "pi5-a")]
    assert (timed_out["status"], timed_out["rounds"], timed_out["failures"]) == ("timeout", 0, 3)
    assert timed_out["message"] == "no result within 600 s"
    mob = pairs[("mobilenet", "pi5-a")]
    assert mob["status"] == "ok" and mob["rounds"] == 3 and len(mob["latency_p50_us"]) == 3
    assert mob["accuracy_pct"] == 74.0 and mob["energy_mj"] is not None and mob["throttled"] is False
    assert pairs[("new-model", "pi5-a")]["accuracy_pct"] is None
    exported = api.export(store, "main")
    assert exported["run"]["id"] == c.baseline_run_id and len(exported["results"]) == 3 * len(MODELS) * len(
        BOARDS
    )
    assert all(len(r["metrics"]["latency_samples_us"]) == 400 for r in exported["results"])
