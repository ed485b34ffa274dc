"""Editing a copied model contract, as a user's broken install would have it."""

from __future__ import annotations

import json
from pathlib import Path


def set_contract_key(path: Path, key: str, value: object) -> None:
    """Set `key` (dotted for nested sections, e.g. "output.stride") in the contract file `path`."""
    contract = json.loads(path.read_text())
    *parents, last = key.split(".")
    node = contract
    for part in parents:
        node = node[part]
    node[last] = value
    path.write_text(json.dumps(contract))
