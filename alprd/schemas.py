"""JSON Schemas of the bodies in `alprd.payloads`, and the list of keys each may hold: the source of
`docs/payloads/*.json` (`tools/payload_schemas.py`) and of the compliance manifest's field lists."""

from __future__ import annotations

import dataclasses
import json
import types
import typing

from .payloads import PUBLISHED, Body, DiscoveryBody


def _closed(node: object) -> None:
    """Every object with named properties admits no other keys: a field the code adds without
    regenerating the schema then fails validation instead of passing unnoticed."""
    if isinstance(node, dict):
        if "properties" in node:
            node.setdefault("additionalProperties", False)
        for v in node.values():
            _closed(v)
    elif isinstance(node, list):
        for v in node:
            _closed(v)


def json_schema(body: type[Body]) -> dict[str, object]:
    """The JSON Schema (draft 2020-12) of a body, from its dataclass (pydantic derives it)."""
    from pydantic import TypeAdapter

    schema: dict[str, object] = {"$schema": "https://json-schema.org/draft/2020-12/schema"}
    schema.update(TypeAdapter(body).json_schema())
    schema["title"] = f"<prefix>/<device_id>/{body.topic}"
    _closed(schema)
    return schema


DISCOVERY_TOPIC = "homeassistant/sensor/<node_id>/<object_id>/config"


def schema_file(body: type[Body]) -> str:
    return f"{body.topic.replace('/', '-')}.json" if body.topic else "homeassistant-discovery.json"


def schema_files() -> dict[str, dict[str, object]]:
    """`docs/payloads/<file>` -> its schema, for every JSON body the device publishes
    (`tools/payload_schemas.py` writes them; a test checks the committed files are these)."""
    files = {schema_file(body): json_schema(body) for body in PUBLISHED}
    discovery = json_schema(DiscoveryBody)
    discovery["title"] = DISCOVERY_TOPIC
    files[schema_file(DiscoveryBody)] = discovery
    return files


def body_fields(body: type[Body], prefix: str = "") -> tuple[str, ...]:
    """Every key a body may hold: `match.kind` for nested bodies, `candidates[].text` for bodies in
    lists; a free-form mapping (`location`, `tokens`) is named once. From the dataclass's types, not
    its JSON Schema: the manifest is built at every start, and pydantic takes a second over the
    schemas on a busy Pi (tests check that both say the same)."""
    hints = typing.get_type_hints(body)
    out: list[str] = []
    for f in dataclasses.fields(body):  # type: ignore[arg-type]
        key = prefix + f.name
        out += [key, *_nested_fields(hints[f.name], key)]
    return tuple(dict.fromkeys(out))


def _nested_fields(tp: object, key: str) -> list[str]:
    if isinstance(tp, type) and issubclass(tp, Body):
        return list(body_fields(tp, key + "."))
    args = typing.get_args(tp)
    if isinstance(tp, types.UnionType):
        return [k for a in args for k in _nested_fields(a, key)]
    if typing.get_origin(tp) is tuple and len(args) == 2 and args[1] is Ellipsis:
        return _nested_fields(args[0], key + "[]")
    return []


def schema_text(schema: dict[str, object]) -> str:
    return json.dumps(schema, indent=2, sort_keys=True) + "\n"
