#!/usr/bin/env bash
# Install alprd on a Raspberry Pi (64-bit Raspberry Pi OS, Bookworm). Run from a clone, as root:
#   sudo tools/install-pi.sh /path/to/device-keys
# The keys folder holds what headquarters gives a device: list.key, signing.pub, evidence.pub,
# ack.pub (and optionally mqtt-password). Re-running is safe: it updates the venv and the unit.
set -euo pipefail
KEYS=${1:?usage: install-pi.sh KEYS_DIR (with list.key, signing.pub, evidence.pub)}
PREFIX=/opt/alprd
SRC=$(cd "$(dirname "$0")/.." && pwd)

[ "$(uname -m)" = aarch64 ] || echo "warning: not a 64-bit ARM system; onnxruntime wheels need aarch64 on a Pi" >&2

apt-get update -qq
# picamera2 comes from apt (it needs the system libcamera); the venv sees it via --system-site-packages
apt-get install -y -qq python3-venv python3-picamera2 >/dev/null

id alprd >/dev/null 2>&1 || useradd --system --home-dir /var/lib/alprd --shell /usr/sbin/nologin --groups video alprd

if [ "$SRC" != "$PREFIX" ]; then
    mkdir -p "$PREFIX"
    cp -a "$SRC/." "$PREFIX/"
fi
python3 -m venv --system-site-packages "$PREFIX/.venv"
"$PREFIX/.venv/bin/pip" install -q --upgrade pip
"$PREFIX/.venv/bin/pip" install -q "$PREFIX"

install -d -m 0750 -o root -g alprd /etc/alprd /etc/alprd/keys
for f in list.key signing.pub evidence.pub ack.pub mqtt-password; do
    [ -f "$KEYS/$f" ] && install -m 0600 -o root -g root "$KEYS/$f" /etc/alprd/keys/$f
done
if [ ! -f /etc/alprd/alprd.yaml ]; then
    # A non-editable install puts the package in site-packages, away from the models: name them.
    sed -e 's|^  kind: opencv |  kind: picamera2|' \
        -e "s|^  # models_dir: .*|  models_dir: $PREFIX/models|" \
        "$PREFIX/config/alprd.example.yaml" > /etc/alprd/alprd.yaml
    echo "edit /etc/alprd/alprd.yaml (device_id, mqtt.host, policy), then run this script again" >&2
fi
chmod 0640 /etc/alprd/alprd.yaml && chgrp alprd /etc/alprd/alprd.yaml

install -m 0644 "$PREFIX/systemd/alprd.service" /etc/systemd/system/alprd.service
# a first check before the unit is enabled: exit 2 lists every problem as file:line key: message
"$PREFIX/.venv/bin/alprd" check-config /etc/alprd/alprd.yaml
systemctl daemon-reload
systemctl enable --now alprd.service
systemctl --no-pager status alprd.service || true
echo "alprd installed; follow it with: journalctl -u alprd -f"
