"""A farm run compared with a baseline run: per model × device × metric, one of four outcomes.

``regressed``     the metric got worse: significantly, beyond run-to-run noise, by at least the
                  minimum effect;
``improved``      the same, better;
``unchanged``     whatever changed is smaller than the minimum effect (latency and energy: the
                  whole 90 % interval of the change lies within ± the minimum effect);
``inconclusive``  the data cannot tell: measure again (``remeasure``) or look at it.

The gate fails (``Comparison.gate_failed``; ``edgeq farm compare`` exits 4) when any pair regressed.
Inconclusive pairs do not fail the gate: the orchestrator measures them again (another round of
the current run; a baseline is a past run) up to ``max_remeasures`` times, and the verdict of the
last comparison stands. Pinpoint (Chromium) has the same four-way shape with a low and a high
p-value threshold; edgeq decides "unchanged" by an equivalence interval instead of a power table.

Statistics (thresholds are FARM.toml's ``[thresholds]``, see :class:`Thresholds`)
---------------------------------------------------------------------------------
Terms. A *round* is one runner process measuring the pair (one stored result); a pair has one or
more rounds in each run (re-measurement adds rounds). A *sample* is one invoke's latency.

**Latency** needs two pieces of evidence, because its noise has two levels.

1. Within a round, samples: the raw per-invoke latencies (``latency_us.samples``), all rounds of
   a side pooled, compared with the Mann–Whitney U test, two-sided (``scipy.stats.mannwhitneyu``:
   exact for small samples without ties, normal approximation with tie correction otherwise).
   H0: a latency from the current run is as likely to be above as below one from the baseline. A
   rank test, because latency distributions are skewed with long right tails (interrupts, cache
   misses, frequency steps) where a t-test's normality fails and a few outliers dominate a mean.
2. Between rounds: one process is not an independent draw of the board's latency. Each has its
   own memory layout, cache and frequency history and core placement, and its median moves by a
   few percent on a quiet board (on this project's shared 2-core test VM, the same model's median
   moved between 17 and 36 µs from process to process). Thousands of samples from one process say
   nothing about that; treating them as independent (pseudo-replication) makes U find
   "significant" differences between two runs of the same file. So the round is the unit for the
   second test: ``y`` = log of each round's median; ``d`` = mean y(current) − mean y(baseline);
   its variance is the between-round variance (pooled over both sides, df = rounds − 2, floored at
   each median's own sampling variance) × (1/R_base + 1/R_cur), and ``d / se`` is referred to
   Student's t. One more term: the rounds of one run share a session (the board's temperature,
   background load, the state of a shared machine over those minutes), so a run's level is itself
   one draw of how far the board wanders between sessions; the variance of ``d`` gains the baseline's
   between-round variance (its rounds are spread over its run), or ``run_to_run_pct`` squared when
   the baseline has one round. A change must stand out from that wandering to count as a
   regression; one within it is inconclusive and is measured again.
   With fewer than 3 rounds in all (df < 1) the between-round variance cannot be
   estimated; ``run_to_run_pct`` (default 2 %: a quiet, dedicated board) stands in for it and the
   reference is the normal distribution, and the sampling variance of each median (Price & Bonett
   2002: from the order statistics around it, on the log scale) is added.

   Effect: the change of the median, ``exp(d) − 1`` (for one round a side: median ratio − 1).
   Rule: both tests significant (the larger of the two p-values, after the corrections below, is
   below alpha: an intersection–union test) and the change ≥ +minimum effect → regressed (≤ −min →
   improved); else the 90 % interval of the change (t or normal, as above) inside
   (−min, +min) → unchanged (two one-sided tests at 5 %, the usual equivalence test); else
   inconclusive. Fewer than ``latency_min_samples`` samples on a side: inconclusive. A run that
   throttled (thermal) on either side never gives regressed or improved: not comparable.

   Why a minimum effect (default 5 % of the median): with thousands of samples and several rounds
   the tests find changes far too small to matter; a regression must be large enough to matter.
   What a farm should do: measure every pair in 3 rounds or more (both in the baseline and in the
   run), so run-to-run noise is estimated from the data rather than assumed.

**Energy.** Per round: energy per inference ``E`` and its standard uncertainty ``σ`` (the
runner's batch-means standard error over the power trace). The same round-level procedure on
``y = ln E`` with sampling variance ``(σ/E)²`` (delta method), minimum effect
``energy_min_effect_pct``; there is no sample-level test (the runner returns no per-inference
energies). A side without energy or without σ is inconclusive (not re-measurable here).

**On-device accuracy.** Data: correct / n on the test data (the newest round; a model is
deterministic, rounds are not pooled). Test: Fisher's exact test on the 2×2 table
(correct, wrong) × (baseline, current), two-sided: exact at any n. Both runs usually score the
same items, which makes the proportions positively correlated and Fisher's test conservative
(McNemar's test on per-item outcomes would be sharper; the store keeps counts). Effect: the change
in percentage points. Rule: significant and a drop ≥ ``accuracy_min_drop_points`` → regressed (a
gain as large → improved); a change smaller than that → unchanged; larger but not significant →
inconclusive (the test set is too small to tell: more test data helps, re-measuring does not).

**Peak memory.** What loading and running the model added to the runner (``model_peak_rss_kb``;
the process's whole peak when a side lacks it), median over rounds. No test: memory is close to
deterministic; regressed when it grew by more than ``memory_max_increase_pct`` % AND more than
``memory_max_increase_kb`` kB (both, so neither a tiny model's few kB nor a big model's allocator
noise trips it; set one to 0 to use only the other); improved when it shrank by as much.

**Significance level and multiple comparisons.** ``alpha`` (default 0.01) bounds the family-wise
error rate of one comparison. (1) Latency and energy may be tested up to ``1 + max_remeasures``
times (sequential re-measurement of inconclusive pairs): their p-values are multiplied by that
number (Bonferroni over looks). (2) All tests of the comparison (pairs × latency, energy, accuracy)
form one family, adjusted by Holm's step-down procedure (``correction = "holm"``, or ``"none"``),
which holds the family-wise error rate at alpha under any dependence between the tests. Both
``p_value`` (raw) and ``p_adjusted`` are reported; latency also reports the round-level
``p_runs``. The equivalence intervals (90 %) are per pair and not adjusted: they decide
"unchanged", which never fails the gate.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from datetime import UTC, datetime
from statistics import median
from typing import Any

import numpy as np

from edgeq.errors import UserInputError
from edgeq.farm.store.records import StoredResult

COMPARISON_SCHEMA = "edgeq.farm.comparison/1"
REGRESSED, IMPROVED, UNCHANGED, INCONCLUSIVE = "regressed", "improved", "unchanged", "inconclusive"
OUTCOMES = (REGRESSED, IMPROVED, UNCHANGED, INCONCLUSIVE)
METRICS = ("latency", "energy", "accuracy", "memory")
UNITS = {"latency": "µs", "energy": "mJ", "accuracy": "%", "memory": "kB"}

Pair = tuple[str, str]  # (model, device)


# ----------------------------------------------------------------------------------- thresholds


@dataclass(frozen=True)
class Thresholds:
    """FARM.toml's ``[thresholds]`` table (every key optional)::

    [thresholds]
    alpha = 0.01                    # family-wise significance level of one comparison
    correction = "holm"             # multiple comparisons: "holm" or "none"
    max_remeasures = 2              # extra rounds for an inconclusive pair before it stands
    latency_min_effect_pct = 5.0    # change of the median latency that matters, %
    latency_min_samples = 20        # fewer raw samples on a side: inconclusive
    run_to_run_pct = 2.0            # run-to-run sd of a round's median (or energy), %, assumed
                                    # when a comparison has fewer than 3 rounds to estimate it
    energy_min_effect_pct = 5.0     # change of the energy per inference that matters, %
    accuracy_min_drop_points = 1.0  # drop of on-device top-1 that matters, points
    memory_max_increase_pct = 10.0  # peak memory growth allowed, % (and ...)
    memory_max_increase_kb = 1024   # ... kB: regressed only past both
    """

    alpha: float = 0.01
    correction: str = "holm"
    max_remeasures: int = 2
    latency_min_effect_pct: float = 5.0
    latency_min_samples: int = 20
    run_to_run_pct: float = 2.0
    energy_min_effect_pct: float = 5.0
    accuracy_min_drop_points: float = 1.0
    memory_max_increase_pct: float = 10.0
    memory_max_increase_kb: float = 1024.0

    def __post_init__(self) -> None:
        problems = {
            "alpha": 0 < self.alpha <= 0.5,
            "correction": self.correction in ("holm", "none"),
            "max_remeasures": 0 <= self.max_remeasures <= 20,
            "latency_min_effect_pct": self.latency_min_effect_pct > 0,
            "latency_min_samples": self.latency_min_samples >= 2,
            "run_to_run_pct": 0 <= self.run_to_run_pct <= 100,
            "energy_min_effect_pct": self.energy_min_effect_pct > 0,
            "accuracy_min_drop_points": self.accuracy_min_drop_points > 0,
            "memory_max_increase_pct": self.memory_max_increase_pct >= 0,
            "memory_max_increase_kb": self.memory_max_increase_kb >= 0,
        }
        for key, ok in problems.items():
            if not ok:
                raise UserInputError(
                    f"[thresholds] {key} = {getattr(self, key)!r} is out of range", _THRESHOLD_HINTS[key]
                )

    @classmethod
    def from_toml(cls, table: Mapping[str, Any] | None, where: str = "FARM.toml") -> Thresholds:
        """From the ``[thresholds]`` table of FARM.toml (None or {}: the defaults)."""
        table = dict(table or {})
        known = {f.name: f for f in fields(cls)}
        unknown = sorted(set(table) - set(known))
        if unknown:
            raise UserInputError(
                f"{where}: unknown key [thresholds] {unknown[0]}",
                "the keys are: " + ", ".join(known),
            )
        values: dict[str, Any] = {}
        for key, value in table.items():
            want = type(getattr(cls(), key))
            if want is str:
                ok = isinstance(value, str)
            elif want is int:
                ok = isinstance(value, int) and not isinstance(value, bool)
            else:
                ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
            if not ok:
                raise UserInputError(
                    f"{where}: [thresholds] {key} must be {'a string' if want is str else 'a number'}, got {value!r}",
                    _THRESHOLD_HINTS[key],
                )
            values[key] = float(value) if want is float else value
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def looks(self) -> int:
        """How many times a re-measurable metric may be tested for one pair."""
        return 1 + self.max_remeasures


_THRESHOLD_HINTS = {
    "alpha": "alpha is a probability such as 0.01 (at most 0.5)",
    "correction": 'correction is "holm" (default) or "none"',
    "max_remeasures": "max_remeasures is a whole number of extra rounds, 0 to 20",
    "latency_min_effect_pct": "latency_min_effect_pct is a percentage above 0, such as 5",
    "latency_min_samples": "latency_min_samples is a whole number, at least 2",
    "run_to_run_pct": "run_to_run_pct is a percentage from 0 to 100, such as 2 (measure 3 rounds or more to estimate it instead)",
    "energy_min_effect_pct": "energy_min_effect_pct is a percentage above 0, such as 5",
    "accuracy_min_drop_points": "accuracy_min_drop_points is in percentage points above 0, such as 1",
    "memory_max_increase_pct": "memory_max_increase_pct is a percentage, 0 or more",
    "memory_max_increase_kb": "memory_max_increase_kb is in kB, 0 or more",
}


# -------------------------------------------------------------------------------------- records


@dataclass(frozen=True)
class Verdict:
    """One model × device × metric: what moved, by how much, how sure, and the outcome."""

    model: str
    device: str
    metric: str  # latency, energy, accuracy, memory
    outcome: str  # regressed, improved, unchanged, inconclusive
    unit: str  # of baseline, current and delta
    baseline: float | None  # latency: median µs; energy: mJ/inference; accuracy: %; memory: kB
    current: float | None
    delta: float | None  # current − baseline, in unit (accuracy: points)
    delta_pct: float | None  # relative change, %
    ci_pct: tuple[float, float] | None = None  # confidence interval of the relative change, %
    p_value: float | None = None  # raw, two-sided (latency: Mann-Whitney U on the samples)
    p_runs: float | None = None  # latency: the round-level test (energy: it is p_value)
    p_adjusted: float | None = None  # after the look and family corrections; compared with alpha
    n_baseline: int | None = None  # samples (latency), inferences tested (accuracy), rounds (others)
    n_current: int | None = None
    rounds_baseline: int = 1  # rounds of the pair in the baseline run
    run_noise_pct: float | None = None  # round-to-round sd observed (None: assumed run_to_run_pct)
    threshold: str = ""  # the rule that applied, e.g. "±5 % of the median, alpha 0.01"
    reason: str = ""  # one line: why this outcome
    remeasure: bool = False  # inconclusive and more rounds of the current run could settle it
    rounds: int = 1  # rounds of the pair in the current run
    notes: tuple[str, ...] = ()

    @property
    def pair(self) -> Pair:
        return (self.model, self.device)

    def summary(self) -> str:
        """``latency 412.3 → 489.1 µs (+18.6 %, +76.80 µs), p = 3.0e-41, rounds p = 2.1e-05
        (adjusted p = 6.3e-05): regressed``"""
        if self.baseline is None or self.current is None:
            return f"{self.metric}: {self.outcome} ({self.reason})"
        unit = self.unit
        parts = []
        if self.delta_pct is not None and self.metric != "accuracy":
            parts.append(f"{self.delta_pct:+.1f} %")
        if self.delta is not None:
            parts.append(f"{_fmt(self.delta, signed=True)} {'pt' if self.metric == 'accuracy' else unit}")
        head = f"{self.metric} {_fmt(self.baseline)} → {_fmt(self.current)} {unit} ({', '.join(parts)})"
        if self.p_value is not None:
            head += f", p {_p(self.p_value)}"
            if self.p_runs is not None:
                head += f", rounds p {_p(self.p_runs)}"
            if self.p_adjusted is not None:
                head += f" (adjusted p {_p(self.p_adjusted)})"
        return f"{head}: {self.outcome}"

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["ci_pct"] = list(self.ci_pct) if self.ci_pct is not None else None
        d["notes"] = list(self.notes)
        d["summary"] = self.summary()
        return d


@dataclass(frozen=True)
class PairProblem:
    """A pair that could not be compared: failed in the run, new, or missing from the run."""

    model: str
    device: str
    kind: str  # a failure kind (unreachable, timeout, ...), "no_baseline" or "missing"
    message: str
    attempts: int = 0

    @property
    def pair(self) -> Pair:
        return (self.model, self.device)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Comparison:
    """A run against a baseline: the verdicts and the pairs that could not be compared."""

    run_id: int
    baseline_run_id: int
    against: str  # what the user asked for: "main", or a run id
    thresholds: Thresholds
    verdicts: tuple[Verdict, ...]
    problems: tuple[PairProblem, ...] = ()
    created_at: datetime = field(default_factory=lambda: datetime.now(UTC))

    @property
    def gate_failed(self) -> bool:
        """True when any model × device × metric regressed (the CLI exits 4)."""
        return any(v.outcome == REGRESSED for v in self.verdicts)

    @property
    def regressions(self) -> list[Verdict]:
        return [v for v in self.verdicts if v.outcome == REGRESSED]

    def counts(self) -> dict[str, int]:
        out = dict.fromkeys(OUTCOMES, 0)
        for v in self.verdicts:
            out[v.outcome] += 1
        return out

    def pairs(self) -> list[Pair]:
        return sorted({v.pair for v in self.verdicts} | {p.pair for p in self.problems})

    def pairs_to_remeasure(self, planned_rounds: int = 1) -> list[Pair]:
        """Pairs with an inconclusive verdict that another round could settle, with rounds left:
        fewer than ``planned_rounds + max_remeasures`` rounds in the run (``planned_rounds``: how
        many the farm measures each pair in to begin with). The orchestrator measures these again,
        adds the results to the same run, and compares again."""
        limit = planned_rounds + self.thresholds.max_remeasures
        return sorted(
            {v.pair for v in self.verdicts if v.outcome == INCONCLUSIVE and v.remeasure and v.rounds < limit}
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": COMPARISON_SCHEMA,
            "run": self.run_id,
            "baseline_run": self.baseline_run_id,
            "against": self.against,
            "created_at": self.created_at.isoformat().replace("+00:00", "Z"),
            "gate_failed": self.gate_failed,
            "counts": self.counts(),
            "thresholds": self.thresholds.to_dict(),
            "verdicts": [v.to_dict() for v in self.verdicts],
            "problems": [p.to_dict() for p in self.problems],
            "remeasure": [list(p) for p in self.pairs_to_remeasure()],
        }


# ------------------------------------------------------------------------------------ the tests


def log_median_var(x: np.ndarray) -> tuple[float, float]:
    """(log median, its sampling variance) of positive samples ``x``, distribution-free: from the
    order statistics around the median (Price & Bonett 2002, on the log scale)."""
    from scipy.stats import binom, norm

    y = np.sort(np.log(x))
    n = len(y)
    c = max(1, round((n + 1) / 2 - math.sqrt(n)))
    c = min(c, (n + 1) // 2)
    tail = float(binom.cdf(c - 1, n, 0.5))  # P(fewer than c of n below the median)
    z = float(norm.isf(tail)) if tail > 0 else 8.0
    var = ((y[n - c] - y[c - 1]) / (2 * z)) ** 2 if z > 0 else math.inf
    return float(np.median(y)), float(var)


@dataclass(frozen=True)
class RoundLevel:
    """The change between two sides on the log scale, with rounds as the unit of replication."""

    d: float  # mean log(current rounds) − mean log(baseline rounds)
    se: float
    df: float  # math.inf: the normal reference (run-to-run variance assumed, not estimated)
    noise_pct: float | None  # round-to-round sd estimated from the data (%), or None

    def p(self) -> float:
        from scipy.stats import norm, t

        if self.se == 0:
            return 0.0 if self.d != 0 else 1.0
        z = abs(self.d) / self.se
        return float(2 * (norm.sf(z) if math.isinf(self.df) else t.sf(z, self.df)))

    def interval(self, level: float) -> tuple[float, float]:
        """Two-sided ``level`` interval of the relative change exp(d) − 1."""
        from scipy.stats import norm, t

        q = float(norm.isf((1 - level) / 2) if math.isinf(self.df) else t.isf((1 - level) / 2, self.df))
        return math.exp(self.d - q * self.se) - 1, math.exp(self.d + q * self.se) - 1


def round_level(
    base: Sequence[tuple[float, float]], cur: Sequence[tuple[float, float]], run_to_run: float
) -> RoundLevel:
    """``base`` / ``cur``: per round (log estimate, its sampling variance). ``run_to_run``: the
    assumed round-to-round sd on the log scale when fewer than 3 rounds leave no df to estimate it."""
    yb = np.array([y for y, _ in base])
    yc = np.array([y for y, _ in cur])
    vb = float(np.mean([v for _, v in base]))
    vc = float(np.mean([v for _, v in cur]))
    rb, rc = len(yb), len(yc)
    d = float(yc.mean() - yb.mean())
    df = rb + rc - 2
    if df >= 1:
        ss = float(((yb - yb.mean()) ** 2).sum() + ((yc - yc.mean()) ** 2).sum())
        s2 = max(ss / df, (vb + vc) / 2)  # a round's median varies at least by its sampling error
        # The current run's rounds share one session, so its level is one more draw of how far the
        # board wanders between sessions: the baseline's rounds, spread over its run, show that.
        session = float(yb.var(ddof=1)) if rb >= 2 else run_to_run**2
        se = math.sqrt(s2 * (1 / rb + 1 / rc) + session)
        return RoundLevel(d, se, float(df), 100 * math.sqrt(ss / df))
    var = (vb + run_to_run**2) / rb + (vc + run_to_run**2) / rc
    return RoundLevel(d, math.sqrt(var), math.inf, None)


def mann_whitney_p(base: np.ndarray, cur: np.ndarray) -> float:
    from scipy.stats import mannwhitneyu

    if np.array_equal(np.unique(base), np.unique(cur)) and len(np.unique(base)) == 1:
        return 1.0  # all values equal on both sides: no evidence of a difference
    return float(mannwhitneyu(cur, base, alternative="two-sided", method="auto").pvalue)


def fisher_p(correct_b: int, n_b: int, correct_c: int, n_c: int) -> float:
    from scipy.stats import fisher_exact

    table = [[correct_b, n_b - correct_b], [correct_c, n_c - correct_c]]
    return float(fisher_exact(table, alternative="two-sided")[1])


def normal_p(z: float) -> float:
    from scipy.stats import norm

    return float(2 * norm.sf(abs(z)))


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values (same order as given)."""
    m = len(pvalues)
    order = sorted(range(m), key=lambda i: pvalues[i])
    out = [1.0] * m
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * pvalues[i]))
        out[i] = running
    return out


# ----------------------------------------------------------------------------------- comparing


@dataclass
class _Draft:
    """A verdict before the family correction decides it."""

    pair: Pair
    metric: str
    p: float | None
    looks: int  # multiply p by this (Bonferroni over looks)
    decide: Any  # (significant: bool | None, p_adjusted) -> Verdict


def compare_results(
    baseline: Iterable[StoredResult],
    current: Iterable[StoredResult],
    thresholds: Thresholds | None = None,
    *,
    run_id: int = 0,
    baseline_run_id: int = 0,
    against: str = "",
) -> Comparison:
    """Compare the results of two runs (any order; failures included) pair by pair."""
    th = thresholds or Thresholds()
    base_by, cur_by = _by_pair(baseline), _by_pair(current)
    problems: list[PairProblem] = []
    drafts: list[_Draft] = []
    for pair in sorted(set(base_by) | set(cur_by)):
        b_ok = [r for r in base_by.get(pair, []) if r.ok]
        c_all = cur_by.get(pair, [])
        c_ok = [r for r in c_all if r.ok]
        if not c_all:
            problems.append(PairProblem(*pair, "missing", "in the baseline but not measured in this run"))
            continue
        if not c_ok:
            last = c_all[-1]
            problems.append(PairProblem(*pair, last.status, last.message or last.status, attempts=len(c_all)))
            continue
        if not b_ok:
            problems.append(PairProblem(*pair, "no_baseline", "no result for this pair in the baseline run"))
            continue
        notes = _notes(b_ok, c_ok)
        for fn in (_latency, _energy, _accuracy, _memory):
            d = fn(pair, b_ok, c_ok, th, notes)
            if d is not None:
                drafts.append(d)

    # The family: every test with a p-value, each p first multiplied by its looks.
    tested = [d for d in drafts if d.p is not None]
    looked = [min(1.0, d.p * d.looks) for d in tested if d.p is not None]
    adjusted = holm(looked) if th.correction == "holm" else looked
    adj_by_id = {id(d): a for d, a in zip(tested, adjusted, strict=True)}
    verdicts = []
    for d in drafts:
        adj = adj_by_id.get(id(d))
        v = d.decide(None if adj is None else adj < th.alpha, adj)
        if v.outcome not in (REGRESSED, IMPROVED):
            # "same model file" matters where something moved: then the board or runtime did it
            v = replace(v, notes=tuple(n for n in v.notes if not n.startswith("same model file")))
        verdicts.append(v)
    order = {m: i for i, m in enumerate(METRICS)}
    verdicts.sort(key=lambda v: (v.model, v.device, order[v.metric]))
    return Comparison(
        run_id=run_id,
        baseline_run_id=baseline_run_id,
        against=against,
        thresholds=th,
        verdicts=tuple(verdicts),
        problems=tuple(problems),
    )


def _by_pair(results: Iterable[StoredResult]) -> dict[Pair, list[StoredResult]]:
    out: dict[Pair, list[StoredResult]] = defaultdict(list)
    for r in sorted(results, key=lambda r: r.id):
        out[r.pair].append(r)
    return out


def _notes(base: list[StoredResult], cur: list[StoredResult]) -> tuple[str, ...]:
    notes = []
    for label, get in (
        ("model", lambda r: r.hashes.model),
        ("runner", lambda r: r.hashes.runner),
        ("device profile", lambda r: r.hashes.profile),
        ("measurement spec", lambda r: r.hashes.spec),
    ):
        hb, hc = get(base[-1]), get(cur[-1])
        if hb and hc and hb != hc:
            notes.append(f"{label} changed ({hb[:12]} → {hc[:12]})")
        elif label == "model" and hb and hc:
            notes.append(f"same model file ({hb[:12]}): what moved is the board, runtime or runner")
    for side, rows in (("baseline", base), ("current", cur)):
        if any(r.metrics.throttled for r in rows):
            notes.append(f"the {side} run throttled (thermal)")
    return tuple(notes)


def _throttled(base: list[StoredResult], cur: list[StoredResult]) -> bool:
    return any(r.metrics.throttled for r in base) or any(r.metrics.throttled for r in cur)


EQUIVALENCE_LEVEL = 0.90  # two one-sided tests at 5 %


def _decide_shift(significant: bool, rel: float, lo: float, hi: float, min_eff: float) -> tuple[str, str]:
    """(outcome, reason) for a relative change ``rel`` (fractions; lower is better) with its
    equivalence interval [lo, hi]."""
    pct = f"{min_eff * 100:g} %"
    if significant and rel >= min_eff:
        return REGRESSED, f"significant, and at least the minimum effect of {pct}"
    if significant and rel <= -min_eff:
        return IMPROVED, f"significant, and at least the minimum effect of {pct}"
    if -min_eff < lo and hi < min_eff:
        if significant:
            return UNCHANGED, f"significant, but the whole 90 % interval is within ±{pct}"
        return UNCHANGED, f"the whole 90 % interval is within ±{pct}"
    if significant:
        return (
            INCONCLUSIVE,
            f"significant, but below the minimum effect of {pct} with an interval reaching past it",
        )
    return INCONCLUSIVE, f"not significant, and the interval reaches past ±{pct}: too few or too noisy rounds"


def _samples(r: StoredResult) -> np.ndarray:
    s = np.asarray(r.metrics.latency_samples_us or (), dtype=float)
    return s[s > 0]


def _latency(
    pair: Pair, base: list[StoredResult], cur: list[StoredResult], th: Thresholds, notes: tuple[str, ...]
) -> _Draft:
    b_rounds = [x for x in (_samples(r) for r in base) if x.size]
    c_rounds = [x for x in (_samples(r) for r in cur) if x.size]
    bs = np.concatenate(b_rounds) if b_rounds else np.empty(0)
    cs = np.concatenate(c_rounds) if c_rounds else np.empty(0)
    min_eff = th.latency_min_effect_pct / 100
    common: dict[str, Any] = {
        "model": pair[0],
        "device": pair[1],
        "metric": "latency",
        "unit": UNITS["latency"],
        "threshold": f"±{th.latency_min_effect_pct:g} % of the median; Mann-Whitney U and a round-level t test, alpha {th.alpha:g}",
        "rounds": len(cur),
        "rounds_baseline": len(base),
        "notes": notes,
        "n_baseline": int(bs.size),
        "n_current": int(cs.size),
    }
    if bs.size == 0 or cs.size == 0:
        b50 = _med(r.metrics.latency_p50_us for r in base)
        c50 = _med(r.metrics.latency_p50_us for r in cur)
        side = "baseline" if bs.size == 0 else "current run"
        verdict = Verdict(
            **common,
            outcome=INCONCLUSIVE,
            baseline=b50,
            current=c50,
            delta=_sub(c50, b50),
            delta_pct=_rel(c50, b50),
            reason=f"the {side} has no raw latency samples (the runner's return_samples was 0)",
        )
        return _Draft(pair, "latency", None, 1, lambda s, a: verdict)
    b_est = [log_median_var(x) for x in b_rounds]
    c_est = [log_median_var(x) for x in c_rounds]
    rl = round_level(b_est, c_est, math.log1p(th.run_to_run_pct / 100))
    # Medians of the sides: geometric means of their rounds' medians (one round: its median).
    b50 = math.exp(float(np.mean([y for y, _ in b_est])))
    c50 = b50 * math.exp(rl.d)
    common.update(
        baseline=b50,
        current=c50,
        delta=c50 - b50,
        delta_pct=math.expm1(rl.d) * 100,
        run_noise_pct=rl.noise_pct,
    )
    if min(bs.size, cs.size) < th.latency_min_samples:
        verdict = Verdict(
            **common,
            outcome=INCONCLUSIVE,
            reason=f"too few samples ({min(bs.size, cs.size)} < latency_min_samples {th.latency_min_samples})",
            remeasure=cs.size < th.latency_min_samples,
        )
        return _Draft(pair, "latency", None, 1, lambda s, a: verdict)
    p_mwu = mann_whitney_p(bs, cs)
    p_runs = rl.p()
    lo, hi = rl.interval(EQUIVALENCE_LEVEL)
    throttled = _throttled(base, cur)

    def decide(significant: bool | None, adj: float | None) -> Verdict:
        outcome, reason = _decide_shift(bool(significant), math.expm1(rl.d), lo, hi, min_eff)
        if throttled and outcome in (REGRESSED, IMPROVED):
            outcome, reason = INCONCLUSIVE, f"would be {outcome}, but a run throttled: not comparable"
        if outcome == INCONCLUSIVE and p_mwu < th.alpha and p_runs >= th.alpha:
            reason += " (the samples differ, the rounds do not tell it from run-to-run noise)"
        return Verdict(
            **common,
            outcome=outcome,
            ci_pct=(lo * 100, hi * 100),
            p_value=p_mwu,
            p_runs=p_runs,
            p_adjusted=adj,
            reason=reason,
            remeasure=outcome == INCONCLUSIVE,
        )

    return _Draft(pair, "latency", max(p_mwu, p_runs), th.looks, decide)


def _energy(
    pair: Pair, base: list[StoredResult], cur: list[StoredResult], th: Thresholds, notes: tuple[str, ...]
) -> _Draft | None:
    b_rows = [r for r in base if r.metrics.energy_mj is not None]
    c_rows = [r for r in cur if r.metrics.energy_mj is not None]
    if not b_rows and not c_rows:
        return None
    eb = _gmean(r.metrics.energy_mj for r in b_rows)
    ec = _gmean(r.metrics.energy_mj for r in c_rows)
    min_eff = th.energy_min_effect_pct / 100
    common: dict[str, Any] = {
        "model": pair[0],
        "device": pair[1],
        "metric": "energy",
        "unit": UNITS["energy"],
        "threshold": f"±{th.energy_min_effect_pct:g} % of the energy per inference; round-level test on its sigma, alpha {th.alpha:g}",
        "rounds": len(cur),
        "rounds_baseline": len(base),
        "notes": notes,
        "n_baseline": len(b_rows),
        "n_current": len(c_rows),
        "baseline": eb,
        "current": ec,
        "delta": _sub(ec, eb),
        "delta_pct": _rel(ec, eb),
    }

    def usable(rows: list[StoredResult]) -> bool:
        return bool(rows) and all(
            (r.metrics.energy_mj or 0) > 0 and r.metrics.energy_sigma_mj is not None for r in rows
        )

    if not usable(b_rows) or not usable(c_rows):
        if not b_rows or not c_rows:
            why = f"energy was not measured in the {'baseline' if not b_rows else 'current run'}"
        else:
            why = "no uncertainty (sigma) for the energy on a side: cannot test the difference"
        verdict = Verdict(**common, outcome=INCONCLUSIVE, reason=why)
        return _Draft(pair, "energy", None, 1, lambda s, a: verdict)

    def est(r: StoredResult) -> tuple[float, float]:
        e, sd = float(r.metrics.energy_mj or 0), float(r.metrics.energy_sigma_mj or 0)
        return math.log(e), (sd / e) ** 2

    rl = round_level([est(r) for r in b_rows], [est(r) for r in c_rows], math.log1p(th.run_to_run_pct / 100))
    p = rl.p()
    lo, hi = rl.interval(EQUIVALENCE_LEVEL)
    throttled = _throttled(base, cur)
    common.update(delta_pct=math.expm1(rl.d) * 100, run_noise_pct=rl.noise_pct)

    def decide(significant: bool | None, adj: float | None) -> Verdict:
        outcome, reason = _decide_shift(bool(significant), math.expm1(rl.d), lo, hi, min_eff)
        if throttled and outcome in (REGRESSED, IMPROVED):
            outcome, reason = INCONCLUSIVE, f"would be {outcome}, but a run throttled: not comparable"
        return Verdict(
            **common,
            outcome=outcome,
            ci_pct=(lo * 100, hi * 100),
            p_value=p,
            p_adjusted=adj,
            reason=reason,
            remeasure=outcome == INCONCLUSIVE,
        )

    return _Draft(pair, "energy", p, th.looks, decide)


def _gmean(values: Iterable[float | None]) -> float | None:
    vals = [float(v) for v in values if v is not None and v > 0]
    return math.exp(float(np.mean(np.log(vals)))) if vals else None


def _accuracy(
    pair: Pair, base: list[StoredResult], cur: list[StoredResult], th: Thresholds, notes: tuple[str, ...]
) -> _Draft | None:
    # Accuracy is deterministic on the same test data: the newest round speaks, rounds are not pooled.
    b = next((r for r in reversed(base) if r.metrics.accuracy_n), None)
    c = next((r for r in reversed(cur) if r.metrics.accuracy_n), None)
    if b is None and c is None:
        return None
    min_drop = th.accuracy_min_drop_points
    common: dict[str, Any] = {
        "model": pair[0],
        "device": pair[1],
        "metric": "accuracy",
        "unit": UNITS["accuracy"],
        "threshold": f"a change of {min_drop:g} points, Fisher's exact test, alpha {th.alpha:g}",
        "rounds": len(cur),
        "rounds_baseline": len(base),
        "notes": notes,
    }
    if b is None or c is None:
        side = "baseline" if b is None else "current run"
        verdict = Verdict(
            **common,
            outcome=INCONCLUSIVE,
            baseline=_pct(b),
            current=_pct(c),
            delta=None,
            delta_pct=None,
            reason=f"on-device accuracy was not measured in the {side}",
        )
        return _Draft(pair, "accuracy", None, 1, lambda s, a: verdict)
    cb, nb = int(b.metrics.accuracy_correct or 0), int(b.metrics.accuracy_n or 0)
    cc, nc = int(c.metrics.accuracy_correct or 0), int(c.metrics.accuracy_n or 0)
    ab, ac = 100.0 * cb / nb, 100.0 * cc / nc
    points = ac - ab
    p = fisher_p(cb, nb, cc, nc)
    extra = notes + ((f"test sets differ in size ({nb} vs {nc})",) if nb != nc else ())
    common["notes"] = extra

    def decide(significant: bool | None, adj: float | None) -> Verdict:
        if abs(points) < min_drop:
            outcome, reason = UNCHANGED, f"a change of less than {min_drop:g} points"
        elif significant:
            outcome = REGRESSED if points < 0 else IMPROVED
            reason = f"significant, and at least {min_drop:g} points"
        else:
            outcome = INCONCLUSIVE
            reason = f"{abs(points):.2f} points but not significant: the test set ({nc}) is too small to tell; use more test data"
        return Verdict(
            **common,
            outcome=outcome,
            baseline=ab,
            current=ac,
            delta=points,
            delta_pct=(ac / ab - 1) * 100 if ab > 0 else None,
            p_value=p,
            p_adjusted=adj,
            n_baseline=nb,
            n_current=nc,
            reason=reason,
        )

    return _Draft(pair, "accuracy", p, 1, decide)


def _memory(
    pair: Pair, base: list[StoredResult], cur: list[StoredResult], th: Thresholds, notes: tuple[str, ...]
) -> _Draft | None:
    field_name = "model_peak_rss_kb"
    if not all(r.metrics.model_peak_rss_kb is not None for r in base + cur):
        field_name = "peak_rss_kb"
    kb_b = _med(getattr(r.metrics, field_name) for r in base)
    kb_c = _med(getattr(r.metrics, field_name) for r in cur)
    if kb_b is None and kb_c is None:
        return None
    what = (
        "what the model added to the runner" if field_name == "model_peak_rss_kb" else "the runner's peak RSS"
    )
    max_pct, max_kb = th.memory_max_increase_pct, th.memory_max_increase_kb
    common: dict[str, Any] = {
        "model": pair[0],
        "device": pair[1],
        "metric": "memory",
        "unit": UNITS["memory"],
        "threshold": f"more than {max_pct:g} % and more than {max_kb:g} kB ({what})",
        "rounds": len(cur),
        "rounds_baseline": len(base),
        "notes": notes,
        "baseline": kb_b,
        "current": kb_c,
        "delta": _sub(kb_c, kb_b),
        "delta_pct": _rel(kb_c, kb_b),
        "n_baseline": len(base),
        "n_current": len(cur),
    }
    if kb_b is None or kb_c is None or kb_b <= 0:
        side = "baseline" if kb_b is None or kb_b <= 0 else "current run"
        verdict = Verdict(
            **common, outcome=INCONCLUSIVE, reason=f"peak memory was not measured in the {side}"
        )
        return _Draft(pair, "memory", None, 1, lambda s, a: verdict)
    dkb, dpct = kb_c - kb_b, (kb_c / kb_b - 1) * 100
    if dkb > max_kb and dpct > max_pct:
        outcome, reason = REGRESSED, f"grew by more than {max_pct:g} % and {max_kb:g} kB"
    elif -dkb > max_kb and -dpct > max_pct:
        outcome, reason = IMPROVED, f"shrank by more than {max_pct:g} % and {max_kb:g} kB"
    else:
        outcome, reason = UNCHANGED, f"within {max_pct:g} % or {max_kb:g} kB"
    verdict = Verdict(**common, outcome=outcome, reason=reason)
    return _Draft(pair, "memory", None, 1, lambda s, a: verdict)


# ---------------------------------------------------------------------------------------- helpers


def _med(values: Iterable[float | int | None]) -> float | None:
    vals = [float(v) for v in values if v is not None]
    return float(median(vals)) if vals else None


def _sub(a: float | None, b: float | None) -> float | None:
    return a - b if a is not None and b is not None else None


def _rel(a: float | None, b: float | None) -> float | None:
    return (a / b - 1) * 100 if a is not None and b is not None and b > 0 else None


def _pct(r: StoredResult | None) -> float | None:
    if r is None or not r.metrics.accuracy_n:
        return None
    return 100.0 * (r.metrics.accuracy_correct or 0) / r.metrics.accuracy_n


def _fmt(v: float, signed: bool = False) -> str:
    """Four significant digits, no exponent for everyday magnitudes."""
    if v == 0:
        return "0"
    mag = math.floor(math.log10(abs(v)))
    decimals = max(0, 3 - mag)
    s = f"{v:+.{decimals}f}" if signed else f"{v:.{decimals}f}"
    return s


def _p(p: float) -> str:
    """``= 0.0123``, ``= 3.2e-08``, ``< 1e-300`` (a p-value that underflowed)."""
    if p == 0:
        return "< 1e-300"
    return f"= {p:.3g}" if p >= 1e-3 else f"= {p:.1e}"
