"""What the config schema cannot see, checked before the daemon runs (`alprd check-config`, `alprd
selftest`) and, for the broker link, shown as an alarm while it runs."""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path

from ..config import Config, key_lines
from ..errors import ConfigError
from ..privacy.keys import check_key_files, credential_source


def _lines_of(path: Path) -> dict[tuple[str | int, ...], int]:
    try:
        return key_lines(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError):
        return {}


def line_of(key: str, lines: dict[tuple[str | int, ...], int]) -> int:
    """The line of a dotted key (or of its nearest parent that the file has), else 1."""
    loc = tuple(int(p) if p.isdigit() else p for p in key.split("."))  # list items by index
    return next((lines[loc[:n]] for n in range(len(loc), 0, -1) if loc[:n] in lines), 1)


def preflight(cfg: Config, path: Path, keys: bool = True) -> list[str]:
    """Files that must exist, and key files that must load with a safe mode (`keys`; outside the
    service, systemd credentials are checked at the unit's LoadCredential= sources, as the service will
    get them). Each problem as `file:line key.path: message`."""
    lines = _lines_of(path)
    problems: list[str] = []

    def add(key: str, msg: str) -> None:
        problems.append(f"{path}:{line_of(key, lines)} {key}: {msg}")

    def need_file(key: str, p: Path | None, what: str) -> None:
        if p is None:
            return
        p, via = credential_source(p)
        if not p.is_file():
            add(key, f"{what} {p} does not exist{via}")
        elif not os.access(p, os.R_OK):
            add(key, f"{what} {p} is not readable by this user{via}")

    for i, src in enumerate(cfg.cameras):
        key = f"sources.{i}.path" if cfg.sources else "source.path"
        if src.kind == "video" and not Path(src.path).is_file():
            add(key, f"video file {src.path} does not exist")
        if src.kind == "images" and not Path(src.path).is_dir():
            add(key, f"image folder {src.path} does not exist")
    if not cfg.reader.models_dir.is_dir():
        add("reader.models_dir", f"model folder {cfg.reader.models_dir} does not exist")
    if cfg.capture.geofence is not None:
        from .rules import load_geofence

        try:
            load_geofence(cfg.capture.geofence.file)
        except ConfigError as e:
            add("capture.geofence.file", str(e).removeprefix("capture.geofence.file "))
    if cfg.mqtt.tls is not None:
        need_file("mqtt.tls.ca", cfg.mqtt.tls.ca, "CA certificate")
        need_file("mqtt.tls.cert", cfg.mqtt.tls.cert, "client certificate")
    # the secrets (list key, MQTT password, TLS client key) and the agency's public keys
    for k in check_key_files(cfg) if keys else ():
        if k.error:
            add(k.key, f"{k.error}{k.via}")
    return problems


def _is_loopback(host: str) -> bool:
    if host.lower() in ("localhost", "localhost.localdomain", "ip6-localhost"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def transport_warnings(cfg: Config) -> list[tuple[str, str]]:
    """(key, message) for a broker link that others could read or use: the `insecure_transport`
    alarm and `check-config` warnings. Plain MQTT to a broker on this machine is fine."""
    m = cfg.mqtt
    remote = [host for host, _ in m.endpoints() if not _is_loopback(host)]
    if not m.enabled or not remote:
        return []
    host = remote[0]
    out = []
    if m.tls is None:
        out.append(("mqtt.tls", f"broker {host} is not on this machine and TLS is off: every hit "
                                "crosses the network in clear; set mqtt.tls"))
    if m.password_file is None and (m.tls is None or m.tls.cert is None):
        out.append(("mqtt.password_file", f"broker {host} is not on this machine and the device "
                    "authenticates with neither a password nor a client certificate: an anonymous "
                    "client may read every hit; set mqtt.username and mqtt.password_file (or mqtt.tls.cert)"))
    return out
