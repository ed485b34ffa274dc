"""Home Assistant MQTT discovery (`mqtt.homeassistant: true`, off by default).

Five sensors, each a retained config on `homeassistant/sensor/<node_id>/<object_id>/config` whose
templates read the device's own status, metrics and info: the state, the alarms, the camera's frames
per second, the hits since midnight and the hot-list version. None carries or reads a plate.

Availability: `<prefix>/<device>/availability` holds a plain `online` (at every connect) or `offline`
(at a clean stop). A connection has one Last Will, and it is the JSON status's `offline`; so a
crash leaves the plain topic at `online`, and each sensor also watches the status topic through a
template, with `availability_mode: all`: Home Assistant shows the device unavailable when either
says so.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .. import __version__
from ..config import Config
from ..payloads import (
    DiscoveryBody,
    HaAvailability,
    HaDevice,
    InfoBody,
    MetricsBody,
    OutTopic,
    StatusBody,
)
from ..schemas import body_fields, schema_file
from .publish import Publisher

PREFIX = "homeassistant"
AVAILABILITY = "availability"


@dataclass(frozen=True)
class Sensor:
    key: str
    name: str
    source: str
    """The device topic it reads (below `<prefix>/<device>/`)."""
    template: str
    unit: str | None = None
    state_class: str | None = None
    category: str | None = None
    icon: str | None = None


SENSORS = (
    Sensor("status", "Status", StatusBody.topic, "{{ value_json.state }}", category="diagnostic",
           icon="mdi:cctv"),
    Sensor("alarms", "Alarms", StatusBody.topic,
           "{{ value_json.alarms | default([]) | join(', ') or 'none' }}", category="diagnostic",
           icon="mdi:alert-circle-outline"),
    Sensor("fps", "Camera frames per second", MetricsBody.topic, "{{ value_json.fps }}", unit="fps",
           state_class="measurement", category="diagnostic", icon="mdi:camera-timer"),
    Sensor("hits_today", "Hits today", MetricsBody.topic, "{{ value_json.hits_today }}",
           state_class="total_increasing", icon="mdi:car-search"),
    Sensor("hotlist_version", "Hot-list version", InfoBody.topic,
           "{{ value_json.hotlist.version | default('none') }}", category="diagnostic",
           icon="mdi:format-list-numbered"),
)


def node_id(device_id: str) -> str:
    """The device id as Home Assistant takes a node id (`.` is not allowed there)."""
    return re.sub(r"[^A-Za-z0-9_-]", "_", device_id)


def _base(cfg: Config) -> str:
    return f"{cfg.mqtt.topic_prefix.rstrip('/')}/{cfg.device_id}"


def availability_topic(cfg: Config) -> str:
    return f"{_base(cfg)}/{AVAILABILITY}"


def discovery(cfg: Config) -> dict[str, DiscoveryBody]:
    """Topic -> config of each sensor."""
    node, base = node_id(cfg.device_id), _base(cfg)
    availability = (
        HaAvailability(topic=availability_topic(cfg)),
        HaAvailability(topic=f"{base}/{StatusBody.topic}",
                       value_template="{{ 'online' if value_json.state == 'online' else 'offline' }}"),
    )
    device = HaDevice(identifiers=(f"alprd_{node}",), name=cfg.device_id, manufacturer="alprd",
                      model="licence-plate reader", sw_version=__version__)
    return {
        f"{PREFIX}/sensor/{node}/{s.key}/config": DiscoveryBody(
            name=s.name, unique_id=f"alprd_{node}_{s.key}", state_topic=f"{base}/{s.source}",
            value_template=s.template, availability=availability, availability_mode="all", device=device,
            origin={"name": "alprd", "sw_version": __version__}, entity_category=s.category,
            unit_of_measurement=s.unit, state_class=s.state_class, icon=s.icon,
        )
        for s in SENSORS
    }


def announce(publisher: Publisher, cfg: Config) -> None:
    """The discovery configs and `online`, retained (sent again at every reconnect)."""
    for topic, body in discovery(cfg).items():
        publisher.publish_retained_at(topic, body.encode())
    publisher.publish_retained_at(availability_topic(cfg), b"online")


def offline(publisher: Publisher, cfg: Config) -> None:
    """At a clean stop, before the final status."""
    publisher.publish_retained_at(availability_topic(cfg), b"offline")


def topics(cfg: Config) -> dict[str, OutTopic]:
    """What discovery publishes, for the compliance manifest."""
    if not cfg.mqtt.homeassistant:
        return {}
    fields = body_fields(DiscoveryBody)
    schema = f"docs/payloads/{schema_file(DiscoveryBody)}"
    out = {
        topic: OutTopic(name=topic, about=f"Home Assistant discovery: the {body.name.lower()} sensor",
                        qos=1, retained=True, format="json", schema=schema, fields=fields)
        for topic, body in discovery(cfg).items()
    }
    out[availability_topic(cfg)] = OutTopic(
        name=availability_topic(cfg), about="plain online (at each connect) or offline (at a clean stop)",
        qos=1, retained=True, format="text", schema=None, fields=())
    return out
