"""Typed, strict configuration.

`load_config(path)` is pure: it reads the one file it is given and no environment. Every error
names `file:line key.path: message`. Each stage receives only its own section.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from .errors import ConfigError

PACKAGE_MODELS_DIR = Path(__file__).resolve().parent.parent / "models"
"""Where the shipped models live in a source checkout (and on an installed Pi: the clone)."""

Region = Literal["us", "eu", "br", "auto"]


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ReaderConfig(Section):
    models_dir: Path = Field(
        PACKAGE_MODELS_DIR, description="Folder with the ONNX models and their contract files."
    )
    region: Region = Field("auto", description="Plate grammar used to rank candidates; auto = any region.")
    threads: int = Field(1, ge=1, le=64, description="onnxruntime intra-op threads per model.")
    detector_size: Annotated[int, Field(ge=320, le=1920, multiple_of=32)] = Field(
        640, description="Long side of the image fed to the plate detector (640 near, 960 distant)."
    )
    min_detection_score: float = Field(
        0.5, ge=0.0, le=1.0, description="Plate-detector boxes below this score are ignored."
    )
    max_plates: int = Field(8, ge=1, le=64, description="At most this many plates are read per frame.")
    min_confidence: float = Field(
        0.0, ge=0.0, le=1.0, description="Reads below this confidence are dropped."
    )


class Config(Section):
    """The whole configuration file."""

    device_id: str = Field(
        "alprd-01", min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$",
        description="Unique device name; MQTT client id and topic level.",
    )
    camera: str = Field("cam0", min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$",
                        description="Camera name carried in events.")
    reader: ReaderConfig = Field(default_factory=ReaderConfig)  # type: ignore[arg-type]

    @model_validator(mode="after")
    def _check(self) -> Config:
        return self


# --- loading -----------------------------------------------------------------------------------


class _LineLoader(yaml.SafeLoader):
    """A SafeLoader that remembers the line of every mapping key, by key path."""


def _key_lines(node: yaml.Node, path: tuple[str | int, ...], out: dict[tuple[str | int, ...], int]) -> None:
    out[path] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            key = str(key_node.value)
            out[(*path, key)] = key_node.start_mark.line + 1
            _key_lines(value_node, (*path, key), out)
            out[(*path, key)] = key_node.start_mark.line + 1
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _key_lines(item, (*path, i), out)


def _line_for(loc: tuple[str | int, ...], lines: dict[tuple[str | int, ...], int]) -> int:
    for n in range(len(loc), -1, -1):
        if loc[:n] in lines:
            return lines[loc[:n]]
    return 1


def _format_errors(path: Path, err: ValidationError, lines: dict[tuple[str | int, ...], int]) -> list[str]:
    problems = []
    for e in err.errors():
        loc = tuple(p for p in e["loc"] if isinstance(p, str | int))
        key = ".".join(str(p) for p in loc) or "(top level)"
        msg = e["msg"]
        if e["type"] == "extra_forbidden":
            msg = "unknown key (check the spelling; see config/alprd.example.yaml)"
        elif "input" in e and e["type"] != "missing" and not isinstance(e["input"], dict | list):
            msg = f"{msg} (got {e['input']!r})"
        problems.append(f"{path}:{_line_for(loc, lines)} {key}: {msg}")
    return problems


def parse_config(text: str, path: Path) -> Config:
    """Validate YAML text; `path` is used for messages and to resolve relative paths."""
    try:
        node = yaml.compose(text, Loader=_LineLoader)
        data: Any = yaml.load(text, Loader=_LineLoader)  # noqa: S506 - SafeLoader subclass
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        line = mark.line + 1 if mark is not None else 1
        raise ConfigError(f"{path}:{line} (yaml): {e}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}:1 (top level): the file must be a YAML mapping of keys to values")
    lines: dict[tuple[str | int, ...], int] = {}
    if node is not None:
        _key_lines(node, (), lines)
    try:
        cfg = Config.model_validate(data, context={"base_dir": path.parent})
    except ValidationError as e:
        problems = _format_errors(path, e, lines)
        raise ConfigError("\n".join(problems), problems) from None
    return cfg


def load_config(path: str | Path) -> Config:
    """Read and validate a YAML config file; raises ConfigError naming file, line and key."""
    p = Path(path)
    try:
        raw = p.read_bytes()
    except OSError as e:
        raise ConfigError(f"{p}:0 (file): cannot read config: {e.strerror}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError(f"{p}:1 (file): not UTF-8 text ({e.reason} at byte {e.start})") from None
    if "\x00" in text:
        raise ConfigError(f"{p}:1 (file): contains NUL bytes; is this really the YAML config?")
    return parse_config(text, p)


def config_hash(cfg: Config) -> str:
    """SHA-256 of the canonical JSON form of the validated config (for audit and `info`)."""
    return hashlib.sha256(cfg.model_dump_json().encode()).hexdigest()
