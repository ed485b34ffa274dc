"""Plate recognizer: one CTC text-recognition session, decoded to [0-9A-Z] with per-character
confidences and alternative readings for the hot-list matcher.
"""

from __future__ import annotations

import heapq
import logging
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import numpy.typing as npt

from ..errors import ModelError
from ..types import Candidate, Image
from .onnx import Contract, check_input, load_contract, normalise, open_session

log = logging.getLogger(__name__)

ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"
MAX_CANDIDATES = 10


@dataclass(frozen=True, slots=True)
class Recognition:
    text: str
    confidence: float
    chars: tuple[float, ...]
    candidates: tuple[Candidate, ...]


def _alphabet(contract: Contract, session_meta: dict[str, str]) -> list[str]:
    spec = contract.output.get("alphabet")
    if isinstance(spec, str) and spec.startswith("metadata:"):
        key = spec.split(":", 1)[1]
        if key not in session_meta:
            raise ModelError(f"model {contract.path} has no '{key}' metadata that {contract.name}.json names")
        chars = session_meta[key].split("\n")
    elif isinstance(spec, str):
        chars = list(spec)
    else:
        raise ModelError(f"{contract.name}.json has no usable output.alphabet")
    if contract.output.get("space_last"):
        chars.append(" ")
    return ["<blank>", *chars]


def _fold_matrix(alphabet: list[str]) -> npt.NDArray[np.float32]:
    """K x 37 matrix summing the model's classes into [blank, 0-9, A-Z].

    Lower-case letters count as their capitals; every other class (punctuation, CJK, ...) moves its
    probability onto blank instead of being masked out: a hard mask turns a '-' into a letter.
    """
    fold = np.zeros((len(alphabet), 1 + len(ALPHABET)), np.float32)
    for i, ch in enumerate(alphabet):
        up = ch.upper() if len(ch) == 1 else ""
        j = ALPHABET.find(up) if up and up in ALPHABET else -1
        fold[i, j + 1 if j >= 0 else 0] = 1.0
    return fold


class Recognizer:
    def __init__(self, models_dir: Path, threads: int = 1, name: str = "plate_rec") -> None:
        self.contract = load_contract(models_dir, name)
        self.session = open_session(self.contract, threads)
        self.height = int(self.contract.input.get("height", 48))
        self.min_width = int(self.contract.input.get("min_width", 64))
        self.max_width = int(self.contract.input.get("max_width", 480))
        # How far the rows this model was trained on extend past the line finder's row ends.
        self.row_margin = float(self.contract.input.get("row_margin", 0.0))
        # Lines squeezed horizontally by this factor, as the model was trained (fewer columns,
        # less time per line).
        self.width_scale = float(self.contract.input.get("width_scale", 1.0))
        if not 0.1 <= self.width_scale <= 2.0:
            raise ModelError(
                f"{self.contract.name}.json: input.width_scale {self.width_scale} is outside 0.1-2.0: "
                "restore models/ from the release"
            )
        self.input_name = check_input(self.session, self.contract, height=self.height)
        meta = dict(self.session.get_modelmeta().custom_metadata_map)
        alphabet = _alphabet(self.contract, meta)
        out_classes = self.session.get_outputs()[0].shape[-1]
        if isinstance(out_classes, int) and out_classes != len(alphabet):
            raise ModelError(
                f"model {self.contract.path} outputs {out_classes} classes but its alphabet has "
                f"{len(alphabet)}: the contract {self.contract.name}.json does not match the model"
            )
        self.fold = _fold_matrix(alphabet)
        self.sha256 = self.contract.sha256
        self.recognize(np.full((48, 160, 3), 255, np.uint8))  # warm-up

    def probabilities(self, line: Image) -> npt.NDArray[np.float32]:
        """T x 37 probabilities over [blank, 0-9, A-Z] for an upright text-line image."""
        h, w = line.shape[:2]
        width = round(w * self.height / max(1, h) * self.width_scale)
        width = int(np.clip(width, self.min_width, self.max_width))
        # A row taller than the input is shrunk by area, as the training rows were
        # (`prepare_rec_data.to_height`): sampled bilinearly, it would alias its strokes.
        interp = cv2.INTER_AREA if h > self.height else cv2.INTER_LINEAR
        resized = cv2.resize(line, (width, self.height), interpolation=interp)
        out = self.session.run(None, {self.input_name: normalise(resized, self.contract)})[0][0]
        folded: npt.NDArray[np.float32] = out @ self.fold
        return folded

    def recognize(self, line: Image) -> Recognition:
        return decode(self.probabilities(line))


def decode(probs: npt.NDArray[np.float32]) -> Recognition:
    """Greedy CTC decoding plus per-character alternatives.

    Each emitted character is a run of identical non-blank argmaxes; its distribution is the
    run's frame with the highest peak. Alternatives come from the second and third choices at that
    frame and from dropping a weak character, ranked by the product of character probabilities.
    """
    best = probs.argmax(axis=1)
    segments: list[npt.NDArray[np.float32]] = []
    prev = 0
    for t, k in enumerate(best):
        if k != 0 and k != prev:
            segments.append(probs[t, 1:])
        elif k != 0 and k == prev and probs[t, k] > segments[-1][k - 1]:
            segments[-1] = probs[t, 1:]
        prev = int(k)
    if not segments:
        return Recognition("", 0.0, (), ())
    options: list[list[tuple[float, str]]] = []
    for dist in segments:
        total = float(dist.sum())
        order = np.argsort(dist)[::-1][:3]
        opts = [(float(dist[j]), ALPHABET[j]) for j in order if dist[j] >= 0.02 or j == order[0]]
        # A character that is mostly blank may be a spurious split: offer reading without it.
        if total < 0.6:
            opts.append((1.0 - total, ""))
        options.append(opts)
    top = "".join(opts[0][1] for opts in options)
    chars = tuple(round(opts[0][0], 4) for opts in options)
    cands = _best_combinations(options, MAX_CANDIDATES)
    confidence = float(np.prod(chars))
    if not cands or cands[0].text != top:
        cands = [Candidate(top, confidence), *[c for c in cands if c.text != top]][:MAX_CANDIDATES]
    return Recognition(top, round(confidence, 4), chars, tuple(cands))


def _best_combinations(options: list[list[tuple[float, str]]], k: int) -> list[Candidate]:
    """The k most probable strings choosing one option per position (lazy best-first search)."""
    start = tuple(0 for _ in options)
    def score(idx: tuple[int, ...]) -> float:
        p = 1.0
        for pos, i in enumerate(idx):
            p *= options[pos][i][0]
        return p
    heap = [(-score(start), start)]
    seen = {start}
    out: dict[str, float] = {}
    while heap and len(out) < k:
        neg, idx = heapq.heappop(heap)
        text = "".join(options[pos][i][1] for pos, i in enumerate(idx))
        if text and text not in out:
            out[text] = -neg
        for pos in range(len(idx)):
            if idx[pos] + 1 < len(options[pos]):
                nxt = (*idx[:pos], idx[pos] + 1, *idx[pos + 1 :])
                if nxt not in seen:
                    seen.add(nxt)
                    heapq.heappush(heap, (-score(nxt), nxt))
    return [Candidate(t, round(p, 4)) for t, p in out.items()]


def chars_for(text: str, rec: Recognition) -> tuple[float, ...]:
    """Per-character confidences for a candidate other than the top read.

    Positions where the candidate agrees with the top read keep its confidence; a substituted
    position gets the candidate's share, estimated from the ratio of the two string probabilities.
    """
    if len(text) != len(rec.text) or rec.confidence <= 0:
        cand = next((c for c in rec.candidates if c.text == text), None)
        p = cand.confidence if cand else 0.0
        return tuple(round(p ** (1 / max(1, len(text))), 4) for _ in text)
    cand_p = next((c.confidence for c in rec.candidates if c.text == text), 0.0)
    diff = [i for i, (a, b) in enumerate(zip(text, rec.text, strict=True)) if a != b]
    kept = np.prod([c for i, c in enumerate(rec.chars) if i not in diff]) if diff else 1.0
    sub = (cand_p / kept) ** (1 / max(1, len(diff))) if kept > 0 else 0.0
    return tuple(round(float(sub) if i in diff else c, 4) for i, c in enumerate(rec.chars))
