"""FARM.toml → a :class:`Plan`: which models run on which boards, how, and what counts as a regression.

A plan is validated data, like a device profile: unknown keys are refused with a did-you-mean, every
value is type-checked, and each problem is one line naming the file and the key. The format is
documented in docs/farm.md; the smallest farm is::

    [[models]]
    path = "model.tflite"

    [[devices]]
    profile = "lab-pi"          # a device profile name (--profiles dirs, EDGEQ_PROFILES, built-ins) or path

Measurement settings resolve once, in this order (later wins): MeasureSpec's defaults < the device
profile < the farm's ``[measure]`` < the model's ``measure`` < the device's ``measure`` < a
``[[pairs]]`` entry's ``measure``.
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import json
import math
import re
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgeq.devices.profile import DeviceProfile, load_profile
from edgeq.errors import UserInputError
from edgeq.farm.verdict import Thresholds
from edgeq.spec import MeasureSpec, setting_help

PLAN_SCHEMA = "edgeq.farm.plan/1"
BUSY_CHOICES = ("wait", "skip")
_NAME = re.compile(r"^[^\x00-\x1f/\\]{1,200}$")
SPEC_SETTINGS = tuple(f.name for f in dataclasses.fields(MeasureSpec))


@dataclass(frozen=True)
class Model:
    """One model of the farm: a .tflite file, optional test data and the accuracy it must reach."""

    name: str
    path: Path
    sha256: str
    test_data: Path | None = None  # .npz with x (N, ...) and y (N,) integer labels
    min_top1: float | None = None  # below this on a board: wrong_answer
    measure: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Device:
    """One board of the farm: its profile (what it is, where it is) and what the farm adds."""

    name: str
    profile: DeviceProfile
    models: tuple[str, ...]  # the models it runs (default: all)
    capabilities: frozenset[str]
    measure: Mapping[str, Any] = field(default_factory=dict)
    labgrid_place: str | None = None  # the address comes from this labgrid place

    @property
    def delegate(self) -> str:
        return str(dict(self.measure).get("delegate", self.profile.board.delegate))


@dataclass(frozen=True)
class Pair:
    """One (model, device) entry of the matrix with its resolved measurement."""

    model: Model
    device: Device
    spec: MeasureSpec

    @property
    def key(self) -> tuple[str, str]:
        return (self.model.name, self.device.name)


@dataclass(frozen=True)
class Timeouts:
    connect_s: float | None = None  # TCP + SSH handshake (default: the profile's connect_timeout_s)
    run_s: float | None = None  # one runner process (MeasureSpec timeout_s, unless a measure table sets it)
    lock_wait_s: float = 600.0  # wait for a board another edgeq holds; then the board is busy (exit 3)


@dataclass(frozen=True)
class Labgrid:
    coordinator: str  # HOST:PORT of labgrid-coordinator
    busy: str = "wait"  # a place someone else holds: wait (up to wait_s), or skip its pairs
    wait_s: float = 600.0


@dataclass(frozen=True)
class Plan:
    """The farm: models × devices, measured ``rounds`` times each, with retries and thresholds."""

    name: str
    source: Path
    text_sha256: str
    models: tuple[Model, ...]
    devices: tuple[Device, ...]
    pairs: tuple[Pair, ...]
    rounds: int = 3
    retries: int = 2
    retry_delay_s: float = 2.0
    store: str | None = None
    against: str | None = None
    trust_new_hosts: bool = False
    timeouts: Timeouts = field(default_factory=Timeouts)
    thresholds: Thresholds = field(default_factory=Thresholds)
    labgrid: Labgrid | None = None
    profile_dirs: tuple[Path, ...] = ()

    @property
    def digest(self) -> str:
        """sha256 of everything that decides what gets measured: the FARM.toml text, every model
        file, every resolved profile and spec. A killed run resumes only with the same digest."""
        h = hashlib.sha256(self.text_sha256.encode())
        for p in self.pairs:
            h.update(f"\0{p.model.name}\0{p.model.sha256}\0{p.device.name}\0".encode())
            h.update(p.device.profile.digest().encode())
            h.update(p.spec.to_json().encode())
        return h.hexdigest()

    def device(self, name: str) -> Device:
        return next(d for d in self.devices if d.name == name)

    def pairs_of(self, device: str) -> list[Pair]:
        return [p for p in self.pairs if p.device.name == device]

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": PLAN_SCHEMA,
            "name": self.name,
            "source": str(self.source),
            "digest": self.digest,
            "rounds": self.rounds,
            "retries": self.retries,
            "retry_delay_s": self.retry_delay_s,
            "store": self.store,
            "against": self.against,
            "timeouts": dataclasses.asdict(self.timeouts),
            "thresholds": self.thresholds.to_dict(),
            "labgrid": dataclasses.asdict(self.labgrid) if self.labgrid else None,
            "models": [
                {
                    "name": m.name,
                    "path": str(m.path),
                    "sha256": m.sha256,
                    "test_data": str(m.test_data) if m.test_data else None,
                    "min_top1": m.min_top1,
                }
                for m in self.models
            ],
            "devices": [
                {
                    "name": d.name,
                    "profile": d.profile.name,
                    "address": d.profile.address,
                    "delegate": d.delegate,
                    "capabilities": sorted(d.capabilities),
                    "labgrid_place": d.labgrid_place,
                    "models": list(d.models),
                }
                for d in self.devices
            ],
            "pairs": [
                {"model": p.model.name, "device": p.device.name, "spec": p.spec.to_dict()} for p in self.pairs
            ],
        }


# ------------------------------------------------------------------------------------- validation


@dataclass(frozen=True)
class _Key:
    types: tuple[type, ...]
    doc: str


def _k(types: type | tuple[type, ...], doc: str) -> _Key:
    return _Key(types if isinstance(types, tuple) else (types,), doc)


_NUM = (float, int)
TOP_KEYS: dict[str, _Key] = {
    "name": _k(str, "the farm's name in the results store (default: the file name without .toml)"),
    "store": _k(str, "results store URL or path (--db and EDGEQ_DB win)"),
    "profiles": _k(list, "directories of device profiles, relative to FARM.toml"),
    "rounds": _k(int, "runner processes per (model, device): 3 or more lets verdicts see run-to-run noise"),
    "retries": _k(int, "extra attempts after an unreachable, timeout or runtime_error failure"),
    "retry_delay_s": _k(_NUM, "seconds between attempts (doubling)"),
    "against": _k(str, "baseline compared with during the run (--against wins)"),
    "trust_new_hosts": _k(bool, "pin unknown SSH host keys on first use (like --trust-new-host)"),
    "measure": _k(dict, "MeasureSpec settings for every pair"),
    "timeouts": _k(dict, "connect_s, run_s, lock_wait_s"),
    "thresholds": _k(dict, "verdict thresholds (docs/farm.md)"),
    "labgrid": _k(dict, "coordinator, busy, wait_s"),
    "models": _k(list, "[[models]] tables"),
    "devices": _k(list, "[[devices]] tables"),
    "pairs": _k(list, "[[pairs]] tables: per (model, device) settings"),
}
MODEL_KEYS: dict[str, _Key] = {
    "name": _k(str, "the model's name in results (default: the file name without .tflite)"),
    "path": _k(str, "the .tflite file, relative to FARM.toml"),
    "test_data": _k(str, ".npz with x and integer y: on-device accuracy"),
    "min_top1": _k(_NUM, "top-1 below this fraction on a board is a wrong_answer (needs test_data)"),
    "measure": _k(dict, "MeasureSpec settings for this model"),
}
DEVICE_KEYS: dict[str, _Key] = {
    "name": _k(str, "the board's name in results (default: the profile's name)"),
    "profile": _k(str, "a device profile name or .toml path (relative to FARM.toml)"),
    "host": _k(str, "point the profile at [user@]host[:port]"),
    "delegate": _k(str, "shorthand for measure.delegate"),
    "models": _k(list, "names of the models this board runs (default: all)"),
    "capabilities": _k(list, "extra capabilities for @pytest.mark.edgeq_requires (e.g. camera)"),
    "labgrid_place": _k(str, "take the address from this labgrid place's NetworkService"),
    "measure": _k(dict, "MeasureSpec settings for this board"),
}
PAIR_KEYS: dict[str, _Key] = {
    "model": _k(str, "a model name"),
    "device": _k(str, "a device name"),
    "skip": _k(bool, "leave this pair out of the matrix"),
    "measure": _k(dict, "MeasureSpec settings for this pair"),
}
TIMEOUT_KEYS: dict[str, _Key] = {
    "connect_s": _k(_NUM, "seconds for TCP + SSH handshake per attempt"),
    "run_s": _k(_NUM, "seconds one runner process may take (MeasureSpec timeout_s)"),
    "lock_wait_s": _k(_NUM, "seconds to wait for a board another edgeq run holds"),
}
LABGRID_KEYS: dict[str, _Key] = {
    "coordinator": _k(str, "labgrid coordinator HOST:PORT"),
    "busy": _k(str, "a place someone else holds: wait or skip"),
    "wait_s": _k(_NUM, "seconds to wait for a busy place"),
}


def _type_name(t: type) -> str:
    return {
        str: "a string",
        bool: "true/false",
        int: "an integer",
        float: "a number",
        list: "a list",
        dict: "a table",
    }.get(t, t.__name__)


def _value_type(v: Any) -> str:
    return _type_name(type(v))


class _Checker:
    def __init__(self, source: Path) -> None:
        self.source = source

    def bad(self, where: str, msg: str, hint: str) -> UserInputError:
        at = f" {where}" if where else ""
        return UserInputError(f"{self.source}:{at} {msg}", hint)

    def table(self, raw: Any, keys: Mapping[str, _Key], where: str) -> dict[str, Any]:
        if not isinstance(raw, dict):
            raise self.bad(where, f"must be a table, got {_value_type(raw)}", "see docs/farm.md")
        for key, value in raw.items():
            spec = keys.get(key)
            if spec is None:
                close = difflib.get_close_matches(key, keys, n=1)
                hint = f"did you mean '{close[0]}'?" if close else "known keys: " + ", ".join(keys)
                raise self.bad(where, f"unknown key '{key}'", hint)
            ok = isinstance(value, spec.types) and not (isinstance(value, bool) and bool not in spec.types)
            if ok and isinstance(value, float) and not math.isfinite(value):
                ok = False
            if not ok:
                want = " or ".join(
                    _type_name(t) for t in spec.types if not (t is int and float in spec.types)
                )
                raise self.bad(
                    where, f"key '{key}' must be {want}, got {_value_type(value)} {value!r}", spec.doc
                )
        return dict(raw)

    def strings(self, value: list[Any], key: str, where: str) -> tuple[str, ...]:
        for v in value:
            if not isinstance(v, str) or not v:
                raise self.bad(where, f"key '{key}' must hold non-empty strings, got {v!r}", "")
        return tuple(value)

    def measure(self, raw: Any, where: str) -> dict[str, Any]:
        if not isinstance(raw, dict):
            raise self.bad(where, f"measure must be a table, got {_value_type(raw)}", "see docs/farm.md")
        for key in raw:
            if key not in SPEC_SETTINGS:
                close = difflib.get_close_matches(key, SPEC_SETTINGS, n=1)
                hint = f"did you mean '{close[0]}'?" if close else "settings: " + ", ".join(SPEC_SETTINGS)
                raise self.bad(where, f"unknown measurement setting '{key}'", hint)
        try:
            MeasureSpec.from_dict({k: v for k, v in raw.items() if k not in ("power", "thermal")})
        except Exception as exc:  # RunnerError: one line naming the setting
            message = getattr(exc, "message", str(exc))
            bad_key = next((k for k in raw if f"setting {k} " in message), None)
            raise self.bad(where, message, setting_help(bad_key) if bad_key else "see docs/farm.md") from None
        return dict(raw)

    def name(self, value: str, what: str, where: str) -> str:
        if not _NAME.match(value) or value != value.strip():
            raise self.bad(
                where,
                f"{what} name {value!r} is not usable",
                "1 to 200 characters, no slashes, control characters or surrounding spaces",
            )
        return value


def _positive(chk: _Checker, where: str, key: str, value: float, zero_ok: bool = False) -> float:
    if value < 0 or (value == 0 and not zero_ok):
        raise chk.bad(where, f"key '{key}' must be {'>= 0' if zero_ok else '> 0'}, got {value}", "")
    return float(value)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def capabilities_of(profile: DeviceProfile, delegate: str, extra: Sequence[str] = ()) -> frozenset[str]:
    """What a board can do, for ``@pytest.mark.edgeq_requires``: its delegate, architecture and
    runtime, ``power`` when it has a power sensor, and the FARM.toml's ``capabilities``."""
    caps = {delegate, profile.board.arch, profile.board.runtime, *extra}
    if profile.board.power_source not in ("none", ""):
        caps.add("power")
    if profile.is_local:
        caps.add("local")
    else:
        caps.add("ssh")
    return frozenset(c for c in caps if c)


def load_plan(path: Path | str, profile_dirs: Sequence[Path | str] = ()) -> Plan:
    """Read and validate FARM.toml; every problem is one UserInputError line."""
    path = Path(path).expanduser()
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UserInputError(f"farm file {path} does not exist", "check the path to FARM.toml") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UserInputError(f"cannot read farm file {path}: {exc}", "check the file") from None
    return parse_plan(text, path, profile_dirs)


def parse_plan(text: str, path: Path, profile_dirs: Sequence[Path | str] = ()) -> Plan:
    chk = _Checker(path)
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise chk.bad("", f"is not valid TOML: {exc}", "fix the syntax (https://toml.io)") from None
    top = chk.table(raw, TOP_KEYS, "")
    base = path.parent.absolute()

    name = chk.name(top.get("name", path.stem), "farm", "name")
    rounds = top.get("rounds", 3)
    if not 1 <= rounds <= 100:
        raise chk.bad("", f"key 'rounds' must be 1 to 100, got {rounds}", TOP_KEYS["rounds"].doc)
    retries = top.get("retries", 2)
    if not 0 <= retries <= 20:
        raise chk.bad("", f"key 'retries' must be 0 to 20, got {retries}", TOP_KEYS["retries"].doc)
    retry_delay_s = _positive(chk, "", "retry_delay_s", top.get("retry_delay_s", 2.0), zero_ok=True)

    dirs = [base / Path(x).expanduser() for x in chk.strings(top.get("profiles", []), "profiles", "")]
    for d in dirs:
        if not d.is_dir():
            raise chk.bad(
                "", f"profiles: {d} is not a directory", "list directories holding NAME.toml profiles"
            )
    search = [*dirs, *(Path(d) for d in profile_dirs)]

    farm_measure = chk.measure(top.get("measure", {}), "[measure]")
    t = chk.table(top.get("timeouts", {}), TIMEOUT_KEYS, "[timeouts]")
    timeouts = Timeouts(
        connect_s=_positive(chk, "[timeouts]", "connect_s", t["connect_s"]) if "connect_s" in t else None,
        run_s=_positive(chk, "[timeouts]", "run_s", t["run_s"]) if "run_s" in t else None,
        lock_wait_s=_positive(chk, "[timeouts]", "lock_wait_s", t.get("lock_wait_s", 600.0), zero_ok=True),
    )
    thresholds = Thresholds.from_toml(top.get("thresholds"), str(path))
    labgrid = None
    if "labgrid" in top:
        lg = chk.table(top["labgrid"], LABGRID_KEYS, "[labgrid]")
        if "coordinator" not in lg:
            raise chk.bad("[labgrid]", "needs coordinator", 'add coordinator = "HOST:PORT"')
        busy = lg.get("busy", "wait")
        if busy not in BUSY_CHOICES:
            raise chk.bad("[labgrid]", f"busy = {busy!r} is not one of: wait, skip", LABGRID_KEYS["busy"].doc)
        labgrid = Labgrid(
            coordinator=lg["coordinator"],
            busy=busy,
            wait_s=_positive(chk, "[labgrid]", "wait_s", lg.get("wait_s", 600.0), zero_ok=True),
        )

    # ---- models
    raw_models = top.get("models", [])
    if not raw_models:
        raise chk.bad("", "has no [[models]]", 'add [[models]] with path = "model.tflite"')
    models: list[Model] = []
    for i, rm in enumerate(raw_models):
        where = f"[[models]] #{i + 1}"
        m = chk.table(rm, MODEL_KEYS, where)
        if "path" not in m:
            raise chk.bad(where, "needs path", 'add path = "model.tflite" (relative to FARM.toml)')
        mpath = (base / Path(m["path"]).expanduser()).absolute()
        if not mpath.is_file():
            raise chk.bad(where, f"model {mpath} does not exist", "fix path (relative to FARM.toml)")
        mname = chk.name(m.get("name", mpath.stem), "model", where)
        where = f"[[models]] {mname!r}"
        td = None
        if "test_data" in m:
            td = (base / Path(m["test_data"]).expanduser()).absolute()
            if not td.is_file():
                raise chk.bad(where, f"test_data {td} does not exist", "an .npz with x and y")
        min_top1 = m.get("min_top1")
        if min_top1 is not None:
            if not 0 <= min_top1 <= 1:
                raise chk.bad(
                    where, f"min_top1 must be a fraction 0..1, got {min_top1}", "e.g. min_top1 = 0.9"
                )
            if td is None:
                raise chk.bad(where, "min_top1 needs test_data", 'add test_data = "test.npz" (x, y)')
        if any(x.name == mname for x in models):
            raise chk.bad(where, f"two models are named {mname!r}", 'give one a name = "..."')
        models.append(
            Model(
                name=mname,
                path=mpath,
                sha256=_sha256(mpath),
                test_data=td,
                min_top1=float(min_top1) if min_top1 is not None else None,
                measure=chk.measure(m.get("measure", {}), f"{where} measure"),
            )
        )
    model_names = [m.name for m in models]

    # ---- devices
    raw_devices = top.get("devices", [])
    if not raw_devices:
        raise chk.bad("", "has no [[devices]]", 'add [[devices]] with profile = "NAME"')
    devices: list[Device] = []
    for i, rd in enumerate(raw_devices):
        where = f"[[devices]] #{i + 1}"
        dt = chk.table(rd, DEVICE_KEYS, where)
        if "profile" not in dt:
            raise chk.bad(where, "needs profile", 'add profile = "NAME" (a device profile) or a .toml path')
        ref: str | Path = dt["profile"]
        if str(ref).endswith(".toml") or "/" in str(ref):
            ref = (base / Path(str(ref)).expanduser()).absolute()
        try:
            prof = load_profile(ref, search)
        except UserInputError as exc:
            raise chk.bad(where, exc.message, exc.hint) from None
        if "host" in dt:
            prof = prof.with_target(dt["host"])
        if timeouts.connect_s is not None:
            prof = dataclasses.replace(
                prof, endpoint=dataclasses.replace(prof.endpoint, connect_timeout_s=timeouts.connect_s)
            )
        place = dt.get("labgrid_place")
        if place is not None:
            if labgrid is None:
                raise chk.bad(
                    where, "labgrid_place needs a [labgrid] table", 'add [labgrid] coordinator = "HOST:PORT"'
                )
            if prof.is_local:
                raise chk.bad(where, "a local profile cannot come from a labgrid place", "use an SSH profile")
        elif not prof.is_local and prof.is_template:
            raise chk.bad(
                where,
                f"profile {prof.name!r} has no host (a kind of board, not a board)",
                'add host = "user@address" to this [[devices]] entry, or labgrid_place = "PLACE"',
            )
        dname = chk.name(dt.get("name", prof.name), "device", where)
        where = f"[[devices]] {dname!r}"
        if any(x.name == dname for x in devices):
            raise chk.bad(where, f"two devices are named {dname!r}", 'give one a name = "..."')
        dm = chk.measure(dt.get("measure", {}), f"{where} measure")
        if "delegate" in dt:
            dm = {**dm, "delegate": dt["delegate"]}
            chk.measure(dm, where)
        selected = chk.strings(dt.get("models", model_names), "models", where)
        for mn in selected:
            if mn not in model_names:
                close = difflib.get_close_matches(mn, model_names, n=1)
                raise chk.bad(
                    where,
                    f"models names unknown model {mn!r}",
                    f"did you mean {close[0]!r}?" if close else "models: " + ", ".join(model_names),
                )
        caps = chk.strings(dt.get("capabilities", []), "capabilities", where)
        delegate = str(dm.get("delegate", prof.board.delegate))
        devices.append(
            Device(
                name=dname,
                profile=dataclasses.replace(prof, name=dname) if dname != prof.name else prof,
                models=selected,
                capabilities=capabilities_of(prof, delegate, caps),
                measure=dm,
                labgrid_place=place,
            )
        )
    device_names = [d.name for d in devices]

    # ---- pairs
    pair_cfg: dict[tuple[str, str], dict[str, Any]] = {}
    for i, rp in enumerate(top.get("pairs", [])):
        where = f"[[pairs]] #{i + 1}"
        pc = chk.table(rp, PAIR_KEYS, where)
        for key, names in (("model", model_names), ("device", device_names)):
            if key not in pc:
                raise chk.bad(where, f"needs {key}", f'add {key} = "NAME"')
            if pc[key] not in names:
                close = difflib.get_close_matches(pc[key], names, n=1)
                raise chk.bad(
                    where,
                    f"unknown {key} {pc[key]!r}",
                    f"did you mean {close[0]!r}?" if close else f"{key}s: " + ", ".join(names),
                )
        key2 = (pc["model"], pc["device"])
        if key2 in pair_cfg:
            raise chk.bad(where, f"a second entry for {key2[0]} on {key2[1]}", "merge the two [[pairs]]")
        pc["measure"] = chk.measure(pc.get("measure", {}), f"{where} measure")
        pair_cfg[key2] = pc

    pairs: list[Pair] = []
    by_name = {m.name: m for m in models}
    for dev in devices:
        for mn in dev.models:
            cfg = pair_cfg.get((mn, dev.name), {})
            if cfg.get("skip"):
                continue
            model = by_name[mn]
            overrides: dict[str, Any] = {}
            if timeouts.run_s is not None:
                overrides["timeout_s"] = timeouts.run_s
            for layer in (farm_measure, model.measure, dev.measure, cfg.get("measure", {})):
                overrides.update(layer)
            try:
                spec = dev.profile.measure_spec(overrides)
            except UserInputError as exc:
                raise chk.bad(f"{mn} on {dev.name}:", exc.message, exc.hint) from None
            pairs.append(Pair(model, dev, spec))
    if not pairs:
        raise chk.bad(
            "", "leaves no (model, device) pair to measure", "check models = [...] and [[pairs]] skip"
        )

    store = top.get("store")
    if store is not None and "://" not in store:
        store = str((base / Path(store).expanduser()).absolute())
    return Plan(
        name=name,
        source=path.absolute(),
        text_sha256=hashlib.sha256(text.encode()).hexdigest(),
        models=tuple(models),
        devices=tuple(devices),
        pairs=tuple(pairs),
        rounds=rounds,
        retries=retries,
        retry_delay_s=retry_delay_s,
        store=store,
        against=top.get("against"),
        trust_new_hosts=bool(top.get("trust_new_hosts", False)),
        timeouts=timeouts,
        thresholds=thresholds,
        labgrid=labgrid,
        profile_dirs=tuple(search),
    )


def plan_json(plan: Plan) -> str:
    return json.dumps(plan.to_dict(), indent=2, sort_keys=False)
