#!/usr/bin/env bash
# The project's full test command (README: "The two commands"). Installs what the
# end-to-end tests need when it is missing, then runs every test with the
# end-to-end ones switched on (CAS_RENEWD_E2E=1 turns their skips into failures).
set -euo pipefail
cd "$(dirname "$0")/.."

SDK_VENV=target/sdk-venv
# The official Alibaba Cloud SDKs the conformance test drives, pinned.
SDK_PACKAGES=(alibabacloud-cas20200407==3.9.4 alibabacloud-alidns20150109==4.6.1 cryptography==50.0.2)

apt_install() {
    if [ "$(id -u)" != 0 ]; then
        echo "test.sh: need root (or these packages installed): $*" >&2
        exit 1
    fi
    if [ -z "${APT_UPDATED:-}" ]; then
        apt-get update -qq
        APT_UPDATED=1
    fi
    # Packages such as nginx start their service on install; the tests start their
    # own instances, so keep apt from starting any (policy-rc.d exit 101 = forbidden).
    local had_policy=""
    [ -e /usr/sbin/policy-rc.d ] && had_policy=1
    [ -n "$had_policy" ] || printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
    chmod +x /usr/sbin/policy-rc.d
    # A failed install must not leave the machine forbidding every service start.
    local rc=0
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null || rc=$?
    [ -n "$had_policy" ] || rm -f /usr/sbin/policy-rc.d
    [ "$rc" = 0 ] || { echo "test.sh: apt-get install $* failed ($rc)" >&2; exit "$rc"; }
}

ensure_sdk() {
    if "$SDK_VENV/bin/python" -c 'import alibabacloud_cas20200407, alibabacloud_alidns20150109' 2>/dev/null; then
        return
    fi
    command -v python3 >/dev/null || apt_install python3
    if ! python3 -m venv "$SDK_VENV" 2>/dev/null; then
        rm -rf "$SDK_VENV"
        apt_install python3-venv
        python3 -m venv "$SDK_VENV"
    fi
    "$SDK_VENV/bin/pip" install -q --disable-pip-version-check "${SDK_PACKAGES[@]}"
}

# A command, or the Debian package that provides it.
ensure_tool() {
    command -v "$1" >/dev/null 2>&1 || apt_install "$2"
}

mkdir -p target
ensure_sdk
ensure_tool promtool prometheus          # promtool check metrics / rules, test rules
ensure_tool systemd-analyze systemd      # verify and security of the unit
ensure_tool nginx nginx                  # the end-to-end tests' own nginx instances
# The example configuration gives keys to the ssl-cert group; loading checks it exists.
getent group ssl-cert >/dev/null || apt_install ssl-cert
# The `fleet` feature: etcd-client's build compiles etcd's protos (protoc and the
# well-known types of libprotobuf-dev), and the fleet tests start throwaway etcd
# members of their own on loopback ports (tests/common/etcd.rs). apt_install keeps
# the package's own etcd service from starting; the tests never use it.
ensure_tool etcd etcd-server
ensure_tool protoc protobuf-compiler
[ -e /usr/include/google/protobuf/timestamp.proto ] || apt_install libprotobuf-dev
# The fleet scenario of a host whose clock is 10 minutes off runs that daemon under
# libfaketime (LD_PRELOAD), the whole process's wall clock moved.
compgen -G '/usr/lib/*/faketime/libfaketime.so.1' >/dev/null || apt_install libfaketime

# A cargo subcommand at a pinned version, built from crates.io when missing or other.
ensure_cargo_tool() {
    local name=$1 version=$2
    if cargo "${name#cargo-}" --version 2>/dev/null | grep -qw "v\?$version"; then
        return
    fi
    cargo install --locked "$name@$version"
}
# Builds from source, once per machine: 193 s of CPU (7 min wall on a busy 2-core machine).
ensure_cargo_tool cargo-deny 0.20.2
# Licences, banned crates and sources of the dependency tree (deny.toml), with the
# fleet feature's crates in it (the packaged build has them). The advisories check
# is left out: it needs the RustSec database, a git repository on GitHub that these
# machines cannot fetch (only the package registries are reachable).
cargo deny --locked --features fleet check --hide-inclusion-graph licenses bans sources

# The Debian package (scripts/package-deb.sh), pinned like cargo-deny.
ensure_cargo_tool cargo-deb 3.8.0
ensure_tool dpkg-deb dpkg
ensure_tool dpkg-shlibdeps dpkg-dev   # cargo-deb's depends = "$auto"

export CAS_RENEWD_E2E=1
export CAS_RENEWD_SDK_PYTHON="$PWD/$SDK_VENV/bin/python"
# Two cores: two test threads keep the simulator-heavy tests from starving.
export RUST_TEST_THREADS="${RUST_TEST_THREADS:-2}"

# The packagers' build: no simulator, no demo; proves production code never imports
# cas-sim (a check is enough for that proof and costs far less than a build).
cargo check --locked --no-default-features
# One test build, with the fleet feature: a second full test build without it would
# double the time (.ci/run's clippy and the check above cover the other builds).
# Clippy first: a check build, so a lint stops the script before the long test run.
cargo clippy --locked --workspace --all-targets --features fleet -- -D warnings
cargo test --locked --workspace --all-targets --features fleet

# Last, so a failing test shows first: the .deb, unpacked in a scratch root and checked.
scripts/package-deb.sh
