#!/usr/bin/env bash
# Install alprd on a Raspberry Pi (64-bit Raspberry Pi OS, Bookworm). Run from a clone, as root:
#   sudo tools/install-pi.sh /path/to/device-keys
# The keys folder holds what headquarters gives a device: list.key, signing.pub, evidence.pub,
# ack.pub (and optionally mqtt-password). Re-running is safe: it updates the venv and the unit.
#
# The clone stays where it is and may be deleted afterwards: /opt/alprd holds only the venv (alprd is
# installed into it as a package, models included) and a copy of the README the unit points to.
set -euo pipefail
KEYS=${1:?usage: install-pi.sh KEYS_DIR (with list.key, signing.pub, evidence.pub)}
PREFIX=/opt/alprd
VENV=$PREFIX/.venv
SRC=$(cd "$(dirname "$0")/.." && pwd)
LOCK=$SRC/requirements-pi.lock

[ "$(uname -m)" = aarch64 ] || echo "warning: not a 64-bit ARM system; onnxruntime wheels need aarch64 on a Pi" >&2

apt-get update -qq
# picamera2 comes from apt (it needs the system libcamera); the venv sees it via --system-site-packages.
# numpy comes from apt too: picamera2, simplejpeg and pidng are built against Bookworm's numpy 1.24,
# so requirements-pi.lock leaves numpy out rather than let a pip numpy shadow it.
apt-get install -y -qq python3-venv python3-numpy python3-picamera2 >/dev/null

id alprd >/dev/null 2>&1 || useradd --system --home-dir /var/lib/alprd --shell /usr/sbin/nologin --groups video alprd

install -d -m 0755 "$PREFIX"
if [ -f "$PREFIX/pyproject.toml" ]; then
    # left by earlier versions of this script, which copied the whole clone here
    echo "note: $PREFIX holds an old copy of a clone; only .venv and README.md there are used now" >&2
fi
python3 -m venv --system-site-packages "$VENV"
# Exactly the versions requirements-pi.lock pins, hash-checked; wheels only (CI checks every one has an
# aarch64 wheel), so nothing is compiled on the Pi.
"$VENV/bin/pip" install -q --require-hashes --no-deps --only-binary=:all: -r "$LOCK"
# alprd itself, built from the clone; --force-reinstall: the version number does not change per commit
"$VENV/bin/pip" install -q --no-deps --force-reinstall "$SRC"
install -m 0644 "$SRC/README.md" "$PREFIX/README.md"

# pip check also sees Raspberry Pi OS's own python3-* packages (--system-site-packages), whose metadata
# pip cannot always satisfy; only a complaint about alprd or a locked package stops the install.
norm() { tr 'A-Z_.' 'a-z--'; }
ours=" alprd $(sed -n 's/^\([A-Za-z0-9._-]*\)==.*/\1/p' "$LOCK" | norm | tr '\n' ' ') "
problems=$("$VENV/bin/pip" check 2>&1 || true)
mine=$(printf '%s\n' "$problems" | while read -r name rest; do
    case $ours in *" $(printf '%s' "$name" | norm) "*) printf '%s %s\n' "$name" "$rest" ;; esac
done)
if [ -n "$mine" ]; then
    printf 'pip check:\n%s\n' "$mine" >&2
    exit 1
fi
if [[ $problems != "No broken requirements"* ]]; then
    printf 'pip check (system packages, not alprd; ignored):\n%s\n' "$problems" >&2
fi

install -d -m 0750 -o root -g alprd /etc/alprd /etc/alprd/keys
for f in list.key signing.pub evidence.pub ack.pub mqtt-password; do
    [ -f "$KEYS/$f" ] && install -m 0600 -o root -g root "$KEYS/$f" /etc/alprd/keys/$f
done
if [ ! -f /etc/alprd/alprd.yaml ]; then
    sed -e 's|^  kind: opencv |  kind: picamera2|' "$SRC/config/alprd.example.yaml" > /etc/alprd/alprd.yaml
    echo "edit /etc/alprd/alprd.yaml (device_id, mqtt.host, policy), then run this script again" >&2
elif grep -q "^  models_dir: $PREFIX/models\$" /etc/alprd/alprd.yaml; then
    # what earlier versions of this script wrote, when they copied the whole clone to /opt/alprd
    echo "warning: /etc/alprd/alprd.yaml names reader.models_dir $PREFIX/models (an old copy);" \
        "delete that line to use the models installed with alprd" >&2
fi
chmod 0640 /etc/alprd/alprd.yaml && chgrp alprd /etc/alprd/alprd.yaml

install -m 0644 "$SRC/systemd/alprd.service" /etc/systemd/system/alprd.service
# a first check before the unit is enabled: exit 2 lists every problem as file:line key: message
# (key files included: outside the service they are checked at the unit's LoadCredential= sources)
"$VENV/bin/alprd" check-config /etc/alprd/alprd.yaml
systemctl daemon-reload
systemctl enable --now alprd.service
systemctl --no-pager status alprd.service || true
echo "alprd installed; follow it with: journalctl -u alprd -f"
