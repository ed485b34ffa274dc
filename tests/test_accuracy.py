"""Regression gate: the shipped models over the dev photo folders must stay within 2 points of
the exact-match accuracy recorded in models/accuracy.json (measured by `alprd bench`)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from alprd.cli_reader import load_labels
from alprd.config import PACKAGE_MODELS_DIR, ReaderConfig
from alprd.imageio import read_image
from alprd.reader import PlateReader

RECORDED = json.loads((PACKAGE_MODELS_DIR / "accuracy.json").read_text())
TOLERANCE = 0.02


@pytest.fixture(scope="module")
def reader() -> PlateReader:
    return PlateReader(ReaderConfig(retry_size=960))  # as `alprd read` and `alprd bench`


@pytest.mark.parametrize("region", sorted(RECORDED["exact"]))
def test_accuracy_does_not_regress(reader: PlateReader, data_dir: Path, region: str) -> None:
    folder = data_dir / region
    labels = load_labels(folder)
    right = 0
    for name, rows in labels.items():
        image, _ = read_image(folder / name)
        reads = reader.read(image, region).reads
        right += bool(reads) and reads[0].text in {r["plate"] for r in rows}
    accuracy = right / len(labels)
    floor = RECORDED["exact"][region] - TOLERANCE
    assert accuracy >= floor, f"{region}: exact {accuracy:.3f}, recorded {RECORDED['exact'][region]}"
