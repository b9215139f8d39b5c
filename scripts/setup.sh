#!/usr/bin/env bash
# Install edgeq and everything it needs into ./.venv (idempotent).
#   scripts/setup.sh          the package (enough for `edgeq pipeline`)
#   scripts/setup.sh --test   plus test tools and the system packages the tests use (apt, as root)
set -euo pipefail
cd "$(dirname "$0")/.."

want_test=0
[ "${1:-}" = "--test" ] && want_test=1

if [ "$want_test" = 1 ]; then
    # System packages the test tiers use; installed only when missing.
    need=()
    [ -x /usr/sbin/sshd ] || need+=(openssh-server)
    command -v ssh-keygen >/dev/null || need+=(openssh-client)
    # The ternary kernels' aarch64 cross build, checked under qemu-user.
    command -v aarch64-linux-gnu-gcc >/dev/null || need+=(gcc-aarch64-linux-gnu libc6-dev-arm64-cross)
    command -v qemu-aarch64-static >/dev/null || command -v qemu-aarch64 >/dev/null || need+=(qemu-user-static)
    # Stand-in delegate libraries and the OpenVINO 2022.3 IR reader are built in the tests.
    command -v gcc >/dev/null || need+=(gcc)
    command -v g++ >/dev/null || need+=(g++)
    # The farm's store runs against a real PostgreSQL; its HTML report is opened in headless Chromium.
    [ -x /usr/lib/postgresql/15/bin/initdb ] || need+=(postgresql-15)
    command -v chromium >/dev/null || need+=(chromium)
    # bench_deploy compares edgeq deploy with scp and rsync on the same link.
    command -v rsync >/dev/null || need+=(rsync)
    # The farm tier's hosts make a venv with Debian's Python.
    [ ! -x /usr/bin/python3 ] || /usr/bin/python3 -c "import ensurepip" 2>/dev/null || need+=(python3-venv)
    if [ "${#need[@]}" -gt 0 ]; then
        if [ "$(id -u)" = 0 ]; then
            echo "setup: installing ${need[*]}" >&2
            apt-get update -qq
            DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
        else
            echo "setup: missing ${need[*]}; run as root or install them (apt-get install ${need[*]})" >&2
            exit 1
        fi
    fi
fi

PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$PY" -m venv .venv
fi
stamp=.venv/.edgeq-installed
sig=$(cat pyproject.toml | sha256sum | cut -c1-16)-$want_test
if [ "$(cat "$stamp" 2>/dev/null)" != "$sig" ]; then
    .venv/bin/python -m pip install -q --upgrade pip
    if [ "$want_test" = 1 ]; then
        .venv/bin/python -m pip install -q -e '.[test]'
    else
        .venv/bin/python -m pip install -q -e .
    fi
    echo "$sig" > "$stamp"
fi
# Bytecode for edgeq's own modules (an editable install leaves it to the first run, and an environment
# with PYTHONDONTWRITEBYTECODE would compile them on every command: a tenth of a short one's time).
.venv/bin/python -m compileall -q edgeq >/dev/null

if [ "$want_test" = 1 ] && [ ! -f .venv/openvino-2022.3/openvino/libs/libopenvino.so.2232 ]; then
    # OpenVINO 2022.3's own libraries (its wheel; the Python binding inside is for Python <= 3.10):
    # a test checks that the IR edgeq writes for a Movidius NCS2 is read by the version that runs it.
    tmp=$(mktemp -d)
    .venv/bin/python -m pip download -q --no-deps --only-binary=:all: --python-version 3.10 \
        --platform manylinux2014_x86_64 -d "$tmp" openvino==2022.3.2
    .venv/bin/python -c "import sys, zipfile; zipfile.ZipFile(sys.argv[1]).extractall(sys.argv[2])" \
        "$tmp"/openvino-2022.3.2-*.whl .venv/openvino-2022.3.part
    rm -rf "$tmp" .venv/openvino-2022.3
    mv .venv/openvino-2022.3.part .venv/openvino-2022.3
fi
