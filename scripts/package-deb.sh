#!/usr/bin/env bash
# Builds the Debian package with cargo-deb and checks what it installs: unpacked
# into a scratch root (dpkg -x), every file the package promises must be there,
# the binary must run, and the unit's Documentation= must name the packaged README.
#   scripts/package-deb.sh            # release build (what CI and packagers use)
# Needs cargo-deb (scripts/test.sh installs the pinned version) and dpkg.
set -euo pipefail
cd "$(dirname "$0")/.."

ASSETS=target/deb-assets
rm -rf "$ASSETS"
mkdir -p "$ASSETS"

# The packagers' binary: no simulator, no demo; with the fleet feature (etcd), so
# building the package needs protoc and libprotobuf-dev (Debian: protobuf-compiler).
# Cargo.toml's [package.metadata.deb] names the same features.
cargo build --release --locked --no-default-features --features fleet
target/release/cas-renewd generate-assets --dir "$ASSETS" >/dev/null
gzip -9n "$ASSETS"/*.8
# The packaged unit: the same file with Debian's paths (/usr/bin, /usr/share/doc)
# in place of the manual install's /usr/local ones.
sed 's#/usr/local/#/usr/#g' systemd/cas-renewd.service > "$ASSETS/cas-renewd.service"

cargo deb --no-build --locked --output target/debian/ >/dev/null
deb=$(ls -t target/debian/cas-renewd_*.deb | head -n1)
echo "package-deb: built $deb ($(du -k "$deb" | cut -f1) KiB)"

root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
dpkg -x "$deb" "$root"
want=(
    usr/bin/cas-renewd
    lib/systemd/system/cas-renewd.service
    usr/share/doc/cas-renewd/README.md
    usr/share/doc/cas-renewd/examples/config.yaml
    usr/share/doc/cas-renewd/examples/cas-renewd.rules.yml
    usr/share/man/man8/cas-renewd.8.gz
    usr/share/man/man8/cas-renewd-run.8.gz
    usr/share/man/man8/cas-renewd-check-config.8.gz
    usr/share/bash-completion/completions/cas-renewd
    usr/share/zsh/vendor-completions/_cas-renewd
    usr/share/fish/vendor_completions.d/cas-renewd.fish
)
missing=0
for f in "${want[@]}"; do
    if [ ! -s "$root/$f" ]; then
        echo "package-deb: missing from the package: /$f" >&2
        missing=1
    fi
done
[ "$missing" = 0 ] || exit 1
unit="$root/lib/systemd/system/cas-renewd.service"
doc=$(sed -n 's#^Documentation=file://##p' "$unit")
[ -s "$root$doc" ] || { echo "package-deb: the unit's Documentation= names $doc, not in the package" >&2; exit 1; }
exec_start=$(sed -n 's#^ExecStart=\([^ ]*\).*#\1#p' "$unit")
[ -x "$root$exec_start" ] || { echo "package-deb: the unit's ExecStart= names $exec_start, not in the package" >&2; exit 1; }
"$root/usr/bin/cas-renewd" --version >/dev/null
if "$root/usr/bin/cas-renewd" demo --help >/dev/null 2>&1; then
    echo "package-deb: the packaged binary has the demo (built with the sim feature)" >&2
    exit 1
fi
# Built with the fleet feature: a `fleet:` section is checked key by key (here the
# missing sealing key is named), not refused whole as a feature left out.
printf 'fleet:\n  etcd: { endpoints: ["http://127.0.0.1:2379"], prefix: /cas-renewd/check }\n  sealing_key_file: /nonexistent/fleet.key\n' > "$root/fleet.yaml"
fleet_check=$("$root/usr/bin/cas-renewd" --config "$root/fleet.yaml" check-config 2>&1 || true)
grep -q 'fleet.sealing_key_file' <<<"$fleet_check" \
    || { echo "package-deb: the packaged binary was built without the fleet feature: $fleet_check" >&2; exit 1; }
zcat "$root/usr/share/man/man8/cas-renewd.8.gz" | grep -q '^\.TH cas-renewd 8' \
    || { echo "package-deb: cas-renewd.8 is not a section 8 man page" >&2; exit 1; }
echo "package-deb: ok (${#want[@]} files checked in a scratch root)"
