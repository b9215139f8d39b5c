"""Device profiles: built-ins, validation errors (one clear line naming the key and file), lookup order."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from edgeq.cli.devices_commands import app as devices_app
from edgeq.devices.listing import list_devices
from edgeq.devices.profile import (
    Board,
    DeviceProfile,
    builtin_names,
    list_profiles,
    load_profile,
)
from edgeq.errors import UserInputError

BUILTINS = {
    "local",
    "generic-x86_64",
    "generic-aarch64",
    "rpi4",
    "rpi5",
    "jetson-orin-nano",
    "coral-devboard",
    "coral-usb-rpi4",
    "intel-ncs2",
    "intel-npu",
}


@pytest.fixture(autouse=True)
def _isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("EDGEQ_PROFILES", raising=False)
    monkeypatch.setenv("EDGEQ_HOME", str(tmp_path / "edgeq-home"))


def write(d: Path, name: str, text: str) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    p = d / f"{name}.toml"
    p.write_text(text)
    return p


MINIMAL = 'host = "10.0.0.5"\narch = "aarch64"\nruntime = "tflite-runtime"\nruntime_version = "2.14.0"\n'


# ------------------------------------------------------------------------------------ built-ins


def test_every_builtin_loads_with_the_facts_a_user_needs() -> None:
    assert set(builtin_names()) == BUILTINS
    for name in BUILTINS:
        p = load_profile(name)
        assert p.name == name and p.source == f"builtin:{name}.toml"
        assert (
            p.board.arch in ("x86_64", "aarch64")
            and p.board.runtime
            and p.board.runtime_version
            and p.board.delegate
        )
        assert p.description and p.notes, name
        assert p.board.power_source
        if name != "local":
            assert p.is_template, f"{name} must not carry somebody's address"
            # zone names differ between ARM SoCs; the generic profile records whatever check finds
            assert p.board.thermal_zones or name == "generic-aarch64", name


def test_builtin_facts() -> None:
    rpi4 = load_profile("rpi4")
    assert (rpi4.board.arch, rpi4.board.runtime, rpi4.board.runtime_version, rpi4.board.delegate) == (
        "aarch64",
        "tflite-runtime",
        "2.14.0",
        "xnnpack",
    )
    assert rpi4.requirements == ("tflite-runtime==2.14.0", "numpy<2")
    assert rpi4.board.thermal_zones == ("cpu-thermal",)
    usb = load_profile("coral-usb-rpi4")
    assert (
        usb.extends == ("builtin:rpi4.toml",)
        and usb.board.delegate == "edgetpu"
        and usb.board.arch == "aarch64"
    )
    assert load_profile("intel-ncs2").board.options == {"device": "MYRIAD"}
    assert load_profile("intel-npu").board.options == {"device": "NPU"}
    assert load_profile("jetson-orin-nano").board.power_source == "ina3221"
    assert load_profile("coral-devboard").board.runtime_source == "system"
    local = load_profile("local")
    assert local.is_local and not local.is_template and Path(local.board.python).exists()
    assert local.endpoint.workdir.endswith("edgeq-home/devices/local")


def test_template_needs_an_address_and_says_how() -> None:
    with pytest.raises(UserInputError) as e:
        load_profile("rpi4").require_address()
    assert (
        "has no host" in e.value.message and 'extends = "rpi4"' in e.value.hint and "--host" in e.value.hint
    )
    p = load_profile("rpi4").with_target("pi@192.168.1.20:2222")
    assert (p.endpoint.host, p.endpoint.user, p.endpoint.port, p.address) == (
        "192.168.1.20",
        "pi",
        2222,
        "pi@192.168.1.20:2222",
    )
    p.require_address()
    assert load_profile("rpi4").with_target("[fe80::1]:22").endpoint.host == "fe80::1"
    assert load_profile("rpi4").with_target("board").endpoint.user is None
    for bad in ("pi@", "a b", "pi@host:port", "-oProxyCommand=x"):
        with pytest.raises(UserInputError):
            load_profile("rpi4").with_target(bad)


# ------------------------------------------------------------------------------------ validation

BAD = [
    (
        "hots = 'x'\n" + MINIMAL.replace('host = "10.0.0.5"\n', ""),
        "unknown key 'hots'",
        "did you mean 'host'",
    ),
    (MINIMAL + "port = '22'\n", "key 'port' must be an integer, got a string", ""),
    (MINIMAL + "port = true\n", "key 'port' must be an integer", ""),
    (MINIMAL + "port = 70000\n", "'port' = 70000 is out of range", ""),
    (MINIMAL.replace('runtime_version = "2.14.0"\n', ""), "missing required key 'runtime_version'", ""),
    (MINIMAL + 'password = "hunter2"\n', "key 'password' is not allowed", "ssh-copy-id"),
    (MINIMAL + 'ssh_passphrase = "x"\n', "key 'ssh_passphrase' is not allowed", ""),
    (
        MINIMAL + 'delegate = "gpu"\n',
        "key 'delegate' = 'gpu' is not one of: none, xnnpack, edgetpu, openvino",
        "",
    ),
    (MINIMAL.replace("tflite-runtime", "onnxruntime"), "key 'runtime' = 'onnxruntime' is not one of", ""),
    (MINIMAL + 'workdir = "edgeq"\n', "device workdir must be absolute or start with ~/, got 'edgeq'", ""),
    (MINIMAL + 'workdir = "~/a/../../etc"\n', "device workdir must not contain '..'", ""),
    (MINIMAL.replace('"10.0.0.5"', '"pi@10.0.0.5"'), "host 'pi@10.0.0.5' contains '@'", "user ="),
    (MINIMAL + 'thermal_zones = "cpu-thermal"\n', "key 'thermal_zones' must be a list", ""),
    (MINIMAL + "thermal_zones = [1]\n", "key 'thermal_zones' must hold strings", ""),
    (MINIMAL + 'name = "other"\n', "name = 'other' differs from the file name", ""),
    (MINIMAL + "arch = 'x'\n", "not valid TOML", ""),
    (MINIMAL.replace('"aarch64"', '"auto"'), 'arch = "auto" is only for kind = "local"', ""),
    (MINIMAL + 'power_source = "hwmon"\n', 'power_source = "hwmon" needs power_sensor', ""),
    (MINIMAL + "runs = 0\n", "key 'runs' must be an integer >= 1, got 0", ""),
    (MINIMAL + "[delegate_options]\ndevice = [1]\n", "delegate_options.device must be", ""),
    ('extends = "nope"\n' + MINIMAL, "extends unknown profile 'nope'", ""),
    ('extends = "rpi44"\nhost = "x"\n', "extends unknown profile 'rpi44'", "did you mean 'rpi4'"),
]


@pytest.mark.parametrize(("text", "message", "hint"), BAD, ids=[b[1][:40] for b in BAD])
def test_bad_profiles_give_one_clear_line(tmp_path: Path, text: str, message: str, hint: str) -> None:
    path = write(tmp_path / "p", "dev", text)
    with pytest.raises(UserInputError) as e:
        load_profile(str(path))
    msg = e.value.message
    assert message in msg
    assert str(path) in msg, "the error names the file"
    assert "\n" not in msg and "\n" not in e.value.hint
    assert hint in e.value.hint


def test_password_is_rejected_even_when_inherited(tmp_path: Path) -> None:
    d = tmp_path / "p"
    write(d, "base", MINIMAL + 'password = "x"\n')
    child = write(d, "child", 'extends = "base"\n')
    with pytest.raises(UserInputError, match=r"base\.toml: key 'password' is not allowed"):
        load_profile(str(child))


def test_extends_cycle_and_missing_keys_name_the_leaf(tmp_path: Path) -> None:
    d = tmp_path / "p"
    write(d, "a", 'extends = "b"\n')
    write(d, "b", 'extends = "a"\n')
    with pytest.raises(UserInputError, match="cycle"):
        load_profile("a", [d])
    write(d, "c", 'host = "x"\narch = "x86_64"\n')
    with pytest.raises(UserInputError, match=r"c\.toml: missing required key 'runtime'"):
        load_profile("c", [d])


def test_identity_file_expands_and_relative_paths_follow_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    d = tmp_path / "p"
    write(d, "a", MINIMAL + 'identity_file = "~/.ssh/id_ed25519"\n')
    write(d, "b", MINIMAL + 'identity_file = "keys/id"\n')
    assert load_profile("a", [d]).endpoint.identity_file == tmp_path / "home" / ".ssh" / "id_ed25519"
    assert load_profile("b", [d]).endpoint.identity_file == d / "keys" / "id"


def test_extends_a_builtin_and_override(tmp_path: Path) -> None:
    d = tmp_path / "p"
    write(
        d,
        "lab-pi",
        'extends = "rpi4"\nhost = "192.168.1.20"\nuser = "pi"\nruntime = "ai-edge-litert"\n'
        'runtime_version = "2.3.0"\n',
    )
    p = load_profile("lab-pi", [d])
    assert (p.name, p.endpoint.host, p.endpoint.user, p.board.arch, p.board.thermal_zones) == (
        "lab-pi",
        "192.168.1.20",
        "pi",
        "aarch64",
        ("cpu-thermal",),
    )
    assert p.requirements == ("ai-edge-litert==2.3.0",) and p.extends == ("builtin:rpi4.toml",)
    assert not p.is_template and p.digest() != load_profile("rpi4").digest()


def test_how_long_a_connection_is_kept_is_not_part_of_the_digest(tmp_path: Path) -> None:
    """persist_s says nothing about the device or the measurement: results keep their profile hash
    (and hashes stored before the key existed still match); a port does change it."""
    found = []
    for i, extra in enumerate(("", "persist_s = 0\n", "port = 2222\n")):
        d = tmp_path / str(i)
        d.mkdir()
        write(d, "lab", f'extends = "rpi4"\nhost = "10.0.0.2"\n{extra}')
        found.append(load_profile("lab", [d]))
    a, b, c = found
    assert (a.endpoint.persist_s, b.endpoint.persist_s) == (60.0, 0.0)
    assert a.digest() == b.digest() != c.digest()


# ------------------------------------------------------------------------------------ lookup order


def test_lookup_order_flag_then_env_then_builtin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    flag, env1, env2 = tmp_path / "flag", tmp_path / "env1", tmp_path / "env2"
    write(flag, "rpi4", 'extends = "rpi4"\nhost = "from-flag"\n')
    write(env1, "rpi4", 'extends = "rpi4"\nhost = "from-env"\n')
    write(env2, "mine", MINIMAL)
    monkeypatch.setenv("EDGEQ_PROFILES", f"{env1}:{env2}")
    assert load_profile("rpi4", [flag]).endpoint.host == "from-flag"
    p = load_profile("rpi4")
    assert p.endpoint.host == "from-env" and p.source == str(env1 / "rpi4.toml")
    # a user rpi4.toml extending "rpi4" gets the built-in underneath it, not itself
    assert p.extends == ("builtin:rpi4.toml",) and p.board.runtime == "tflite-runtime"
    assert load_profile("mine").endpoint.host == "10.0.0.5"
    rows = {e.name: e for e in list_profiles([flag])}
    assert rows["rpi4"].source == str(flag / "rpi4.toml")
    assert rows["rpi4"].shadows == (str(env1 / "rpi4.toml"), "builtin:rpi4.toml")
    assert set(rows) == BUILTINS | {"mine"}
    monkeypatch.delenv("EDGEQ_PROFILES")
    assert load_profile("rpi4").endpoint.host is None


def test_unknown_name_and_bad_dirs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(UserInputError) as e:
        load_profile("rpi-4")
    assert "unknown device 'rpi-4'" in e.value.message and "rpi4" in e.value.hint
    with pytest.raises(UserInputError, match="no such directory"):
        load_profile("rpi4", [tmp_path / "missing"])
    with pytest.raises(UserInputError, match="does not exist"):
        load_profile(str(tmp_path / "x.toml"))
    with pytest.raises(UserInputError, match="not a device name"):
        load_profile("$(touch x)")
    monkeypatch.setenv("EDGEQ_PROFILES", str(tmp_path / "missing"))
    with pytest.raises(UserInputError, match="EDGEQ_PROFILES names"):
        load_profile("rpi4")


def test_a_broken_user_file_is_listed_with_its_error(tmp_path: Path) -> None:
    d = tmp_path / "p"
    write(d, "broken", MINIMAL + "colour = 1\n")
    rows = {r.name: r for r in list_devices([d])}
    assert "unknown key 'colour'" in rows["broken"].error
    assert rows["rpi4"].host == "(set host)" and rows["local"].host == "local"


def test_profile_is_frozen_and_serialisable() -> None:
    p = load_profile("intel-npu")
    with pytest.raises(AttributeError):
        p.name = "x"  # type: ignore[misc]
    data = json.loads(json.dumps(p.to_dict()))
    assert data["delegate_options"] == {"device": "NPU"} and data["arch"] == "x86_64"
    assert isinstance(hash(p), int)
    assert (
        DeviceProfile(
            name="x", board=Board(arch="x86_64", runtime="openvino", runtime_version="1")
        ).endpoint.port
        == 22
    )


# ------------------------------------------------------------------------------------ CLI


def test_cli_list_and_show(tmp_path: Path) -> None:
    d = tmp_path / "p"
    write(d, "lab", 'extends = "rpi5"\nhost = "10.1.2.3"\nuser = "me"\n')
    runner = CliRunner()
    res = runner.invoke(devices_app, ["list", "--profiles", str(d), "--json"])
    assert res.exit_code == 0, res.output
    rows = {r["name"]: r for r in json.loads(res.stdout)}
    assert rows["lab"]["host"] == "me@10.1.2.3" and rows["lab"]["arch"] == "aarch64"
    assert rows["rpi4"]["runtime"] == "tflite-runtime 2.14.0" and rows["rpi4"]["delegate"] == "xnnpack"
    res = runner.invoke(devices_app, ["list", "--profiles", str(d)])
    assert res.exit_code == 0 and "rpi4" in res.stdout and "(set host)" in res.stdout
    res = runner.invoke(devices_app, ["show", "rpi4", "--host", "pi@10.0.0.9", "--json"])
    assert res.exit_code == 0 and json.loads(res.stdout)["host"] == "10.0.0.9"
    res = runner.invoke(devices_app, ["show", "nope"])
    assert isinstance(res.exception, UserInputError)
