#!/usr/bin/env bash
# Build, once, a Debian bookworm arm64 (minbase) root filesystem that runs on this x86_64 machine
# under qemu-user, for the farm's emulated `arm64` board.
#
#   scripts/farm/aarch64_rootfs.sh [ROOT]      (default: $EDGEQ_FARM_ROOTFS or /var/cache/edgeq-farm/rootfs-arm64)
#
# Idempotent and cached: a ROOT holding a stamp for the current recipe is left as it is; only the
# host side (packages, binfmt registration) is checked again, which a fresh boot of the machine needs.
# The build happens in ROOT.partial and is renamed to ROOT when complete, so a ROOT that exists is whole.
#
# Host changes it makes (left in place, they are machine setup, not farm state):
#   - installs debootstrap, binfmt-support and qemu-user-static >= 10 (from bookworm-backports: the
#     stock 7.2 segfaults in ai-edge-litert >= 2.2). To reach backports it adds
#     /etc/apt/sources.list.d/edgeq-farm-backports.sources for the install and removes it afterwards,
#     unless backports were configured already.
#   - mounts binfmt_misc and registers qemu-aarch64 (flags OPF: open, preserve-argv0, fix-binary;
#     F means the interpreter need not exist inside the chroot).
set -euo pipefail

readonly RECIPE="edgeq-farm-rootfs/1 bookworm arm64 minbase python3 python3-venv python3-pip python3-numpy openssh-server ca-certificates"
readonly CHROOT_PACKAGES=(python3 python3-venv python3-pip python3-numpy openssh-server ca-certificates)
readonly BACKPORTS_LIST=/etc/apt/sources.list.d/edgeq-farm-backports.sources
readonly QEMU_MIN_VERSION=1:10.0
readonly STAMP_NAME=.edgeq-rootfs-stamp
readonly MARKER_NAME=.edgeq-rootfs-building

log() { printf '[aarch64_rootfs] %s\n' "$*" >&2; }
die() { printf '[aarch64_rootfs] error: %s\n' "$*" >&2; exit 1; }

export DEBIAN_FRONTEND=noninteractive
# Other sessions may be running apt at the same time: wait for the dpkg lock instead of failing.
APT_OPTS=(-y -q -o DPkg::Lock::Timeout=600 -o Acquire::Retries=3)

apt_update() {
    local i
    for i in 1 2 3 4 5; do
        apt-get "${APT_OPTS[@]}" update >/dev/null && return 0
        log "apt-get update failed (try $i), retrying in 10 s"
        sleep 10
    done
    die "apt-get update keeps failing"
}

# The Debian mirror the host already uses (deb822 .sources or one-line .list), for debootstrap.
debian_mirror() {
    python3 - <<'PY'
import glob, re, sys
files = ["/etc/apt/sources.list", *sorted(glob.glob("/etc/apt/sources.list.d/*.list"))]
for path in files:
    try:
        lines = open(path).read().splitlines()
    except OSError:
        continue
    for line in lines:
        m = re.match(r"\s*deb\s+(?:\[[^]]*\]\s+)?(\S+)\s+bookworm\s", line + " ")
        if m:
            print(m.group(1)); sys.exit(0)
for path in sorted(glob.glob("/etc/apt/sources.list.d/*.sources")):
    for stanza in re.split(r"\n\s*\n", open(path).read()):
        fields = {}
        for line in stanza.splitlines():
            if ":" in line and not line.startswith(("#", " ")):
                key, value = line.split(":", 1)
                fields[key.strip().lower()] = value.split()
        if "deb" in fields.get("types", []) and "bookworm" in fields.get("suites", []) \
                and fields.get("enabled", ["yes"])[0] != "no" and fields.get("uris"):
            print(fields["uris"][0]); sys.exit(0)
print("http://deb.debian.org/debian")
PY
}

qemu_version_ok() {
    local v
    v=$(dpkg-query -W -f='${Version}' qemu-user 2>/dev/null) || return 1
    [[ -n $v ]] && dpkg --compare-versions "$v" ge "$QEMU_MIN_VERSION"
}

# Remove the backports source only if this run added it; also on any exit (trap in main).
BACKPORTS_ADDED=0
remove_backports() {
    if ((BACKPORTS_ADDED)); then
        rm -f "$BACKPORTS_LIST"
        BACKPORTS_ADDED=0
    fi
}

ensure_host_packages() {
    local missing=() pkg updated=0
    for pkg in debootstrap binfmt-support; do
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'ok installed' || missing+=("$pkg")
    done
    if ((${#missing[@]})); then
        log "installing ${missing[*]}"
        apt_update; updated=1
        apt-get "${APT_OPTS[@]}" install --no-install-recommends "${missing[@]}" >/dev/null
    fi
    if qemu_version_ok && [[ -x /usr/libexec/qemu-binfmt/aarch64-binfmt-P ]]; then
        return 0
    fi
    if ! grep -rqs --include='*.list' --include='*.sources' --include=sources.list \
            'bookworm-backports' /etc/apt/sources.list /etc/apt/sources.list.d/; then
        local mirror
        mirror=$(debian_mirror)
        log "enabling bookworm-backports ($mirror) for qemu-user 10"
        cat >"$BACKPORTS_LIST" <<EOF
# Added by edgeq scripts/farm/aarch64_rootfs.sh for the duration of one install; removed after it.
Types: deb
URIs: $mirror
Suites: bookworm-backports
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
        BACKPORTS_ADDED=1
        updated=0
    fi
    ((updated)) || apt_update
    log "installing qemu-user-static from bookworm-backports"
    local rc=0
    apt-get "${APT_OPTS[@]}" install --no-install-recommends -t bookworm-backports \
        qemu-user-static qemu-user qemu-user-binfmt >/dev/null || rc=$?
    remove_backports
    ((rc == 0)) || die "installing qemu-user-static from bookworm-backports failed"
    qemu_version_ok || die "qemu-user is $(dpkg-query -W -f='${Version}' qemu-user), need >= $QEMU_MIN_VERSION"
}

ensure_binfmt() {
    local dir=/proc/sys/fs/binfmt_misc conf=/usr/lib/binfmt.d/qemu-aarch64.conf
    [[ -f $conf ]] || die "$conf missing (qemu-user-binfmt not installed?)"
    if ! mountpoint -q "$dir"; then
        mount -t binfmt_misc binfmt_misc "$dir"
    fi
    [[ $(cat "$dir/status") == enabled ]] || echo 1 >"$dir/status"
    local want_interp
    want_interp=$(awk -F: '{print $7}' "$conf")
    if [[ -f $dir/qemu-aarch64 ]]; then
        if grep -qx "interpreter $want_interp" "$dir/qemu-aarch64" \
                && grep -qx 'enabled' "$dir/qemu-aarch64" \
                && grep -Eq '^flags: .*P' "$dir/qemu-aarch64" && grep -Eq '^flags: .*F' "$dir/qemu-aarch64"; then
            return 0
        fi
        # Registered by something else (e.g. the stock qemu 7.2 via binfmt-support): replace it.
        log "replacing the existing qemu-aarch64 binfmt registration"
        echo -1 >"$dir/qemu-aarch64"
    fi
    # systemd-binfmt's format is the kernel's register format; there is no systemd here to load it.
    cat "$conf" >"$dir/register"
    log "registered qemu-aarch64 ($want_interp, flags $(awk -F: '{print $8}' "$conf"))"
}

# Runs inside a private mount namespace (see main): every mount below disappears with it.
build_in_namespace() {
    local target=$1 mirror=$2 t0=$SECONDS
    log "debootstrap first stage from $mirror"
    debootstrap --arch=arm64 --variant=minbase --foreign bookworm "$target" "$mirror" >"$target.log" 2>&1 \
        || { tail -20 "$target.log" >&2; die "debootstrap --foreign failed (log: $target.log)"; }
    log "  first stage: $((SECONDS - t0)) s"
    t0=$SECONDS
    # With binfmt flag F the host's qemu is used even inside the chroot; the copy is for tools that
    # expect it there (and costs 14 MB).
    cp /usr/bin/qemu-aarch64 "$target/usr/bin/qemu-aarch64-static"
    log "debootstrap second stage (emulated)"
    chroot "$target" /debootstrap/debootstrap --second-stage >>"$target.log" 2>&1 \
        || { tail -20 "$target.log" >&2; die "debootstrap --second-stage failed (log: $target.log)"; }
    log "  second stage: $((SECONDS - t0)) s"
    t0=$SECONDS

    mount -t proc proc "$target/proc"
    mount -t sysfs sysfs "$target/sys"
    mount --rbind /dev "$target/dev"
    cp /etc/resolv.conf "$target/etc/resolv.conf"
    cat >"$target/etc/apt/sources.list" <<EOF
deb $mirror bookworm main
deb $mirror bookworm-updates main
EOF
    # No init runs in the chroot: keep package scripts from trying to start sshd under emulation.
    printf '#!/bin/sh\nexit 101\n' >"$target/usr/sbin/policy-rc.d"
    chmod 755 "$target/usr/sbin/policy-rc.d"
    log "apt-get install ${CHROOT_PACKAGES[*]} (emulated)"
    {
        chroot "$target" apt-get -y -q update &&
        chroot "$target" apt-get -y -q install --no-install-recommends "${CHROOT_PACKAGES[@]}" &&
        chroot "$target" apt-get clean
    } >>"$target.log" 2>&1 || { tail -20 "$target.log" >&2; die "apt-get in the chroot failed (log: $target.log)"; }
    rm -f "$target/usr/sbin/policy-rc.d"
    rm -rf "$target/var/lib/apt/lists/"*
    log "  packages: $((SECONDS - t0)) s"

    # pip on the board goes out through the farm's proxy, whose TLS is only trusted with the host's
    # CA bundle (which may hold a CA the Debian bundle lacks).
    mkdir -p "$target/usr/local/share/edgeq"
    cp /etc/ssl/certs/ca-certificates.crt "$target/usr/local/share/edgeq/host-ca-certificates.crt"
    cat >"$target/etc/pip.conf" <<'EOF'
[global]
cert = /usr/local/share/edgeq/host-ca-certificates.crt
disable-pip-version-check = true
EOF
    echo edgeq-arm64 >"$target/etc/hostname"
}

main() {
    [[ $(id -u) -eq 0 ]] || die "must run as root"
    if [[ ${1:-} == --in-namespace ]]; then
        build_in_namespace "$2" "$3"
        return
    fi
    local root=${1:-${EDGEQ_FARM_ROOTFS:-/var/cache/edgeq-farm/rootfs-arm64}}
    root=$(realpath -m "$root")
    [[ $root != / && $root != /var && $root != /tmp && $root != /var/cache ]] || die "refusing ROOT=$root"

    local t0=$SECONDS
    trap remove_backports EXIT
    ensure_host_packages
    ensure_binfmt

    if [[ -f $root/$STAMP_NAME ]] && [[ $(head -1 "$root/$STAMP_NAME") == "$RECIPE" ]]; then
        log "cached: $root ($(du -sh --one-file-system "$root" | cut -f1))"
        chroot "$root" /bin/true || die "cannot run the rootfs's binaries under qemu (binfmt?)"
        echo "$root"
        return 0
    fi
    if [[ -e $root && ! -f $root/$STAMP_NAME ]] && [[ -n $(ls -A "$root" 2>/dev/null) ]]; then
        die "$root exists and is not a rootfs this script built: move it away or pass another ROOT"
    fi

    local partial=$root.partial
    if [[ -e $partial ]]; then
        [[ -f $partial/$MARKER_NAME ]] || [[ -z $(ls -A "$partial") ]] \
            || die "$partial exists and is not ours: remove it by hand"
        grep -qs " $partial/" /proc/mounts && die "something is mounted under $partial: unmount it first"
        log "removing an unfinished build: $partial"
        rm -rf --one-file-system "$partial"
    fi
    mkdir -p "$partial"
    touch "$partial/$MARKER_NAME"

    local mirror
    mirror=$(debian_mirror)
    # A private mount namespace: proc/sys/dev mounted into the chroot vanish with it, even on failure.
    unshare --mount --propagation private -- bash "$(realpath "$0")" --in-namespace "$partial" "$mirror"

    rm -f "$partial/$MARKER_NAME"
    {
        echo "$RECIPE"
        echo "built $(date -u +%FT%TZ) from $mirror with $(/usr/bin/qemu-aarch64 --version | head -1)"
    } >"$partial/$STAMP_NAME"
    if [[ -e $root ]]; then
        # An older recipe (the stamp differs): swap it out only once the new one is complete.
        mv "$root" "$root.old.$$"
        mv "$partial" "$root"
        rm -rf --one-file-system "$root.old.$$"
    else
        mv "$partial" "$root"
    fi
    mv -f "$partial.log" "$root.build.log" 2>/dev/null || true
    log "built $root in $((SECONDS - t0)) s, $(du -sh --one-file-system "$root" | cut -f1) (log: $root.build.log)"
    echo "$root"
}

main "$@"
