"""Write docs/payloads/*.json, the JSON Schema of every body the device publishes, from alprd/payloads.py.

Usage: python tools/payload_schemas.py   (or `make schemas`). Files of bodies that no longer exist are
removed; tests/test_payloads.py fails while the committed files differ from what this writes.
"""

from __future__ import annotations

from pathlib import Path

from alprd.schemas import schema_files, schema_text

OUT = Path(__file__).resolve().parent.parent / "docs" / "payloads"


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    files = schema_files()
    for old in OUT.glob("*.json"):
        if old.name not in files:
            old.unlink()
    for name, schema in files.items():
        (OUT / name).write_text(schema_text(schema), encoding="utf-8")
        print(OUT / name)


if __name__ == "__main__":
    main()
