"""The published payload schemas (docs/payloads/*.json) and the hit payload v2 (issue 21)."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from pathlib import Path

import jsonschema
import numpy as np
import pytest
from privacy_support import T0, make_agency

from alprd.payloads import PUBLISHED, HitBody
from alprd.privacy.hotlist import load_bundle
from alprd.schemas import schema_file, schema_files, schema_text
from alprd.types import Box, Candidate, Hit, Track

ROOT = Path(__file__).resolve().parent.parent
PAYLOADS = ROOT / "docs" / "payloads"


def validator(name: str) -> jsonschema.Draft202012Validator:
    schema = json.loads((PAYLOADS / name).read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema, format_checker=jsonschema.FormatChecker())


def test_the_committed_schemas_are_the_ones_payloads_py_generates() -> None:
    files = schema_files()
    assert {p.name for p in PAYLOADS.glob("*.json")} >= set(files), "run `make schemas`"
    for name, schema in files.items():
        assert (PAYLOADS / name).read_text() == schema_text(schema), f"{name} is stale: run `make schemas`"


def track(text: str, ts: float) -> Track:
    return Track(
        track_id=1, text=text, confidence=0.93, chars=(0.93,) * len(text),
        candidates=(Candidate(text, 0.93),),
        reads=3, agreeing_reads=3, box=Box(10, 20, 80, 40), first_ts=ts - 1.5, last_ts=ts, camera="front",
        region="us", grammar_ok=True, image=np.zeros((4, 4, 3), np.uint8), direction="approaching",
    )


LIST = """\
plate,reason,state,plate_type,priority,expires,source,case_number,note
ABC1234,stolen vehicle,CA,passenger,10,,NCIC,V123456789,
7?B2*,witness partial plate,,,20,,,,blue sedan
"""


@pytest.fixture
def hot(tmp_path: Path):  # type: ignore[no-untyped-def]
    agency = make_agency(tmp_path)
    bundle = agency.pack(LIST, 7, list_id="patrol")
    return load_bundle(bundle, agency.signing_key.public_key(), agency.list_key, T0)


def test_a_hit_names_its_list_entry_state_and_time_and_validates_as_v2(hot) -> None:  # type: ignore[no-untyped-def]
    check = validator("hit.json")
    ts = T0.timestamp() + 0.25
    m = hot.match("ABC1234", (0.93,) * 7, None, T0)
    body = HitBody.of(Hit(track("ABC1234", ts), m, True), "dev", None, "h-1").as_dict()
    check.validate(body)
    assert body["v"] == 2 and body["time"] == "2026-11-25T12:00:00.250Z"
    assert datetime.fromisoformat(str(body["time"])).timestamp() == body["ts"]
    assert body["state"] == "CA"  # the entry's state: the reader does not read one
    assert body["match"] == {
        "kind": "exact", "reason": "stolen vehicle", "priority": 10, "list_version": 7,
        "p_not_entry": body["match"]["p_not_entry"], "entry_plate": "ABC1234", "list_id": "patrol",
        "case_number": "V123456789", "source": "NCIC", "state": "CA", "note": None,
    }
    # a wildcard hit says which entry it matched, as listed; what the entry leaves empty is null
    w = hot.match("7XB2999", (0.93,) * 7, None, T0)
    where = {"lat": 1.0, "lon": 2.0, "source": "static"}
    wild = HitBody.of(Hit(track("7XB2999", ts), w, False), "dev", where, None).as_dict()
    check.validate(wild)
    assert wild["match"]["entry_plate"] == "7?B2*" and wild["match"]["kind"] == "wildcard"
    assert wild["state"] is None and wild["match"]["case_number"] is None and wild["match"]["source"] is None
    assert wild["match"]["note"] == "blue sedan"
    # every field of version 1 is still there
    for key in ("hit_id", "device_id", "camera", "ts", "first_ts", "plate", "region", "confidence",
                "chars", "candidates", "reads", "agreeing_reads", "verified", "box", "direction", "location",
                "evidence"):
        assert key in body


@pytest.mark.parametrize(("change", "why"), [
    (lambda b: b.pop("time"), "'time' is a required property"),
    (lambda b: b.update(time="2026-11-25 12:00:00"), "does not match"),
    (lambda b: b.update(v=1), "2 was expected"),
    (lambda b: b["match"].pop("entry_plate"), "'entry_plate' is a required property"),
    (lambda b: b.update(state=5), "5 is not valid under any"),
    (lambda b: b.update(plate_colour="red"), "Additional properties"),
])
def test_the_hit_schema_refuses_what_a_v2_hit_is_not(hot, change, why) -> None:  # type: ignore[no-untyped-def]
    m = hot.match("ABC1234", (0.93,) * 7, None, T0)
    body = HitBody.of(Hit(track("ABC1234", T0.timestamp()), m, True), "dev", None, None).as_dict()
    change(body)
    errors = [e.message for e in validator("hit.json").iter_errors(body)]
    assert any(re.search(why, e) for e in errors), errors


def test_time_keeps_milliseconds_in_utc_whatever_the_local_zone(monkeypatch: pytest.MonkeyPatch) -> None:
    import time

    from alprd.payloads import rfc3339_ms

    monkeypatch.setenv("TZ", "America/Los_Angeles")
    time.tzset()
    try:
        when = datetime(2026, 12, 5, 10, 11, 12, 345000, UTC).timestamp()
        assert rfc3339_ms(when) == "2026-12-05T10:11:12.345Z"
        assert rfc3339_ms(1e9) == "2001-09-09T01:46:40.000Z"
    finally:
        monkeypatch.delenv("TZ")
        time.tzset()


def _schema_fields(schema: dict[str, object]) -> list[str]:
    """Every key of a schema: nested objects as `match.kind`, objects in lists as `candidates[].text`."""
    defs = schema.get("$defs", {})
    out: list[str] = []

    def walk(node: object, prefix: str) -> None:
        if not isinstance(node, dict):
            return
        ref = node.get("$ref")
        if isinstance(ref, str) and isinstance(defs, dict):
            walk(defs[ref.rsplit("/", 1)[-1]], prefix)
        for alt in node.get("anyOf", []):
            walk(alt, prefix)
        if "items" in node:
            walk(node["items"], prefix + "[]")
        for name, sub in (node.get("properties") or {}).items():
            key = f"{prefix}.{name}" if prefix else name
            out.append(key)
            walk(sub, key)

    walk(schema, "")
    return list(dict.fromkeys(out))


def test_the_fields_the_manifest_names_are_the_keys_of_the_published_schemas() -> None:
    from alprd.payloads import DiscoveryBody
    from alprd.schemas import body_fields

    files = schema_files()
    for name, schema in files.items():
        body = next(b for b in (*PUBLISHED, DiscoveryBody) if schema_file(b) == name)
        assert list(body_fields(body)) == _schema_fields(schema), name
    assert "match.entry_plate" in body_fields(HitBody) and "candidates[].text" in body_fields(HitBody)
