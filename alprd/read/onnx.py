"""Shared ONNX plumbing: contract files, SHA-256 check at load, one CPU session per model."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from ..errors import ModelError


@dataclass(frozen=True)
class Contract:
    """The JSON file beside a model: what it expects and what it returns."""

    name: str
    path: Path
    sha256: str
    raw: dict[str, Any]

    @property
    def input(self) -> dict[str, Any]:
        value = self.raw.get("input", {})
        return value if isinstance(value, dict) else {}

    @property
    def output(self) -> dict[str, Any]:
        value = self.raw.get("output", {})
        return value if isinstance(value, dict) else {}


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def load_contract(models_dir: Path, name: str) -> Contract:
    """Read `models_dir/name.json`; raise ModelError naming the file and the fix."""
    cpath = models_dir / f"{name}.json"
    try:
        raw = json.loads(cpath.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ModelError(
            f"model contract {cpath} is missing: reinstall alprd or point reader.models_dir at the "
            "folder that holds the shipped models/"
        ) from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ModelError(f"model contract {cpath} is unreadable ({e}): restore it from the release") from None
    if not isinstance(raw, dict) or not all(isinstance(raw.get(k), str) for k in ("file", "sha256")):
        raise ModelError(f"model contract {cpath} lacks 'file' or 'sha256': restore it from the release")
    return Contract(name=name, path=models_dir / raw["file"], sha256=raw["sha256"], raw=raw)


def open_session(contract: Contract, threads: int) -> Any:
    """Verify the model's SHA-256 and open one CPU onnxruntime session for it."""
    import onnxruntime as ort

    path = contract.path
    if not path.is_file():
        raise ModelError(
            f"model file {path} is missing: reinstall alprd or copy it back from the release's models/"
        )
    actual = file_sha256(path)
    if actual != contract.sha256:
        raise ModelError(
            f"model file {path} has SHA-256 {actual[:16]}…, expected {contract.sha256[:16]}… from "
            f"{contract.name}.json: the file is corrupt or truncated; restore it from the release"
        )
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    if threads > 1:
        # Idle intra-op threads spin by default, burning the core that decodes the next frame: on
        # the stream bench's frames, two spinning threads took 184-195 ms of CPU per read against
        # 86-96 ms without spinning and 85 ms with one thread (BENCHMARKS.md, "Both cores").
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.log_severity_level = 3
    # The arena keeps the peak of every input size ever seen (960-px retries, wide crops) for the
    # life of the process: measured 536 -> 380 MB peak RSS over 30 US photos without it.
    opts.enable_cpu_mem_arena = False
    try:
        return ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])
    except Exception as e:  # onnxruntime raises its own untyped errors
        raise ModelError(f"model file {path} cannot be loaded by onnxruntime ({e}): restore it") from None


def check_input(session: Any, contract: Contract, channels: int = 3, height: int | None = None) -> str:
    """Return the single input's name after checking its rank, channels and (fixed) height."""
    inputs = session.get_inputs()
    if len(inputs) != 1 or len(inputs[0].shape) != 4:
        raise ModelError(f"model {contract.path} must take one NCHW input; the contract does not match")
    shape = inputs[0].shape
    if shape[1] != channels or (height is not None and isinstance(shape[2], int) and shape[2] != height):
        raise ModelError(
            f"model {contract.path} takes input {shape}, but {contract.name}.json promises "
            f"{channels} channels{'' if height is None else f' x {height} rows'}"
        )
    return str(inputs[0].name)


def normalise(image: npt.NDArray[Any], contract: Contract) -> npt.NDArray[np.float32]:
    """HWC uint8 in the contract's colour order -> 1xCxHxW float32, (x/255 - mean) / std."""
    inp = contract.input
    if inp.get("color", "BGR") == "RGB":
        image = image[:, :, ::-1]
    mean = np.asarray(inp.get("mean", [0.5, 0.5, 0.5]), dtype=np.float32)
    std = np.asarray(inp.get("std", [0.5, 0.5, 0.5]), dtype=np.float32)
    # Transpose while still 8-bit (a quarter of the bytes to shuffle), then one float copy scaled
    # in place: a third of the time of the naive expression on a 640 x 640 frame.
    x = np.ascontiguousarray(image.transpose(2, 0, 1)).astype(np.float32)[None]
    x *= (1 / (255 * std))[:, None, None]
    x -= (mean / std)[:, None, None]
    return x
