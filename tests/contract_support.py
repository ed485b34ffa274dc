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


def add_tall_twin(models: Path, width_scale: float = 0.8) -> None:
    """A `plate_rec_tall` in a copy of the models folder: plate_rec itself under that name, read at
    another width scale so that its reads differ from plate_rec's and the routing can be seen. No
    32-px twin ships (models/README.md); the reader still routes to one where a user trains one."""
    import shutil

    shutil.copy(models / "plate_rec.onnx", models / "plate_rec_tall.onnx")
    contract = json.loads((models / "plate_rec.json").read_text())
    contract["name"], contract["file"] = "plate_rec_tall", "plate_rec_tall.onnx"
    contract["input"]["width_scale"] = width_scale
    (models / "plate_rec_tall.json").write_text(json.dumps(contract))
