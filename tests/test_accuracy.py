"""Regression gate: the shipped models over the photo folders must stay within 2 points of the
exact-match accuracy recorded in models/README.md ("Accuracy of the shipped set", measured by
`alprd bench`)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from alprd.cli.reader import load_labels
from alprd.config import PACKAGE_MODELS_DIR, PHOTO_READER, ReaderConfig
from alprd.read.imageio import read_image
from alprd.read.reader import PlateReader

TOLERANCE = 0.02


def recorded_accuracy() -> dict[str, float]:
    """Region -> exact accuracy from the table under '## Accuracy of the shipped set'."""
    text = (PACKAGE_MODELS_DIR / "README.md").read_text(encoding="utf-8")
    section = text.split("## Accuracy of the shipped set", 1)[1].split("\n## ", 1)[0]
    rows = re.findall(r"^\| (\w+) \| \d+ \| ([\d.]+)% \|", section, flags=re.M)
    assert rows, "models/README.md has no accuracy table to check against"
    return {region: float(pct) / 100 for region, pct in rows}


RECORDED = {"exact": recorded_accuracy()}


@pytest.fixture(scope="module")
def reader() -> PlateReader:
    return PlateReader(ReaderConfig(**PHOTO_READER))  # as `alprd read` and `alprd bench`


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
