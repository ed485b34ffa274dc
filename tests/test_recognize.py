"""Recognizer and line finder on real plate crops; CTC decoding on hand-made distributions."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
from contract_support import add_tall_twin, set_contract_key

from alprd.config import PACKAGE_MODELS_DIR, ReaderConfig
from alprd.errors import ModelError
from alprd.read.lines import LineFinder
from alprd.read.reader import PlateReader
from alprd.read.recognize import ALPHABET, Recognizer, decode


def _dist(pairs: list[tuple[str, float]]) -> np.ndarray:
    """One CTC frame: blank gets what the named characters leave."""
    row = np.zeros(1 + len(ALPHABET), np.float32)
    for ch, p in pairs:
        row[1 + ALPHABET.index(ch)] = p
    row[0] = 1.0 - row.sum()
    return row


def test_decode_collapses_repeats_and_keeps_blank_separated_doubles() -> None:
    blank = _dist([])
    frames = [_dist([("A", 0.9)]), _dist([("A", 0.95)]), blank, _dist([("A", 0.8)]), _dist([("7", 0.99)])]
    rec = decode(np.stack(frames))
    assert rec.text == "AA7"
    assert rec.chars == pytest.approx((0.95, 0.8, 0.99), abs=1e-3)
    assert rec.confidence == pytest.approx(0.95 * 0.8 * 0.99, abs=1e-3)


def test_decode_offers_lookalike_alternatives_ranked_by_probability() -> None:
    frames = [_dist([("0", 0.6), ("O", 0.35)]), _dist([("B", 0.7), ("8", 0.25)]), _dist([("1", 0.99)])]
    rec = decode(np.stack(frames))
    texts = [c.text for c in rec.candidates]
    assert texts[0] == "0B1" == rec.text
    assert set(texts[1:3]) == {"OB1", "081"}
    assert texts.index("O81") > texts.index("OB1")
    assert len(rec.candidates) <= 10
    probs = [c.confidence for c in rec.candidates]
    assert probs == sorted(probs, reverse=True)


def test_decode_of_blank_is_empty() -> None:
    rec = decode(np.stack([_dist([]) for _ in range(5)]))
    assert rec.text == "" and rec.candidates == () and rec.confidence == 0.0


@pytest.fixture(scope="module")
def recognizer() -> Recognizer:
    return Recognizer(PACKAGE_MODELS_DIR, threads=1)


@pytest.fixture(scope="module")
def lines(recognizer: Recognizer) -> LineFinder:
    # rows framed the way the shipped recognizer was trained on them (its contract says how)
    return LineFinder(PACKAGE_MODELS_DIR, threads=1, row_margin=recognizer.row_margin)


def test_row_margin_extends_rows_along_their_length_only(data_dir: Path) -> None:
    crop = cv2.imread(str(sorted((data_dir / "br-crops").glob("*.*"))[0]))
    crop = cv2.copyMakeBorder(crop, 20, 20, 30, 30, cv2.BORDER_REPLICATE)
    plain = LineFinder(PACKAGE_MODELS_DIR, threads=1).find(crop)
    wide = LineFinder(PACKAGE_MODELS_DIR, threads=1, row_margin=0.25).find(crop)
    assert plain and len(plain) == len(wide)
    a, b = plain[0], wide[0]
    assert b.h == pytest.approx(a.h) and (b.cx, b.cy) == pytest.approx((a.cx, a.cy))
    assert b.w == pytest.approx(a.w + 2 * 0.25 * a.h, rel=0.02)


def test_reads_real_brazilian_crops(data_dir: Path, recognizer: Recognizer, lines: LineFinder) -> None:
    folder = data_dir / "br-crops"
    with (folder / "labels.csv").open() as f:
        rows = list(csv.DictReader(f))[::100]  # a spread-out sample
    right = 0
    for row in rows:
        tight = cv2.imread(str(folder / row["file"]))
        # These crops are cut tight to the plate; the reader pads detector boxes the same way.
        h, w = tight.shape[:2]
        crop = cv2.copyMakeBorder(tight, h // 3, h // 3, w // 7, w // 7, cv2.BORDER_REPLICATE)
        found = lines.find(crop)
        if not found:
            continue
        rec = recognizer.recognize(LineFinder.cut(crop, found[0]))
        assert set(rec.text) <= set(ALPHABET)
        assert len(rec.chars) == len(rec.text)
        right += rec.text == row["plate"]
    assert right >= 0.7 * len(rows), f"{right}/{len(rows)} read right"


def _copy_models(tmp_path: Path) -> Path:
    dst = tmp_path / "models"
    shutil.copytree(PACKAGE_MODELS_DIR, dst)
    return dst


def test_missing_model_names_file_and_fix(tmp_path: Path) -> None:
    models = _copy_models(tmp_path)
    (models / "plate_rec.onnx").unlink()
    with pytest.raises(ModelError, match=r"plate_rec\.onnx is missing.*reinstall"):
        Recognizer(models)


def test_truncated_model_fails_hash_check(tmp_path: Path) -> None:
    models = _copy_models(tmp_path)
    path = models / "plate_rec.onnx"
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(ModelError, match=r"plate_rec\.onnx has SHA-256 .*corrupt or truncated"):
        Recognizer(models)


def test_wrong_hash_model_is_refused(tmp_path: Path) -> None:
    models = _copy_models(tmp_path)
    path = models / "line_det.onnx"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(ModelError, match=r"line_det\.onnx has SHA-256"):
        LineFinder(models)


@pytest.mark.parametrize("stride", [3, 0, "2", True])
def test_line_finder_stride_must_divide_its_input(tmp_path: Path, stride: object) -> None:
    models = _copy_models(tmp_path)
    set_contract_key(models / "line_det.json", "output.stride", stride)
    with pytest.raises(ModelError, match=r"line_det\.json: output\.stride"):
        LineFinder(models)


def test_missing_contract_is_refused(tmp_path: Path) -> None:
    models = _copy_models(tmp_path)
    (models / "plate_rec.json").unlink()
    with pytest.raises(ModelError, match=r"plate_rec\.json is missing"):
        Recognizer(models)


def test_width_scale_out_of_range_is_refused(tmp_path: Path) -> None:
    models = _copy_models(tmp_path)
    set_contract_key(models / "plate_rec.json", "input.width_scale", 5)
    with pytest.raises(ModelError, match=r"width_scale"):
        Recognizer(models)


def test_tall_row_recognizer_must_share_the_row_cut(tmp_path: Path) -> None:
    # One line finder cuts the rows for both recognizers: a contract trained on another cut is refused.
    models = _copy_models(tmp_path)
    add_tall_twin(models)
    set_contract_key(models / "plate_rec_tall.json", "input.row_margin", 0.3)
    with pytest.raises(ModelError, match=r"plate_rec_tall\.json: input\.row_margin"):
        PlateReader(ReaderConfig(models_dir=models, tall_row_px=40))
    # Not loaded at all where it is switched off, the default (none ships).
    (models / "plate_rec_tall.onnx").unlink()
    assert PlateReader(ReaderConfig(models_dir=models)).tall is None


def test_lines_are_squeezed_as_the_contract_says(recognizer: Recognizer) -> None:
    # The model's time axis follows its input width: a squeezed line gives proportionally fewer
    # frames (a 48 x 200 row at scale s is fed about 200 * s wide, within the contract's bounds).
    line = np.full((48, 200, 3), 255, np.uint8)
    wide = np.full((48, 400, 3), 255, np.uint8)
    t_line, t_wide = recognizer.probabilities(line).shape[0], recognizer.probabilities(wide).shape[0]
    width = np.clip(round(200 * recognizer.width_scale), recognizer.min_width, recognizer.max_width)
    assert t_line == pytest.approx(width / 8, abs=1)  # the network downsamples the width 8x
    assert t_wide >= t_line
