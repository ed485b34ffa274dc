"""Reading the config file: `load_config(path) -> Config`.

Pure: it reads the one file it is given and no environment. The text is bounded before it is parsed
(size, nesting, no aliases), and every error names `file:line key.path: message`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from ..errors import ConfigError
from .schema import Config

MAX_CONFIG_BYTES = 1 << 20
"""A config is a few KB; anything near this is not one (and YAML parsing is not cheap)."""
MAX_CONFIG_DEPTH = 16
"""The schema nests 3 levels; PyYAML's composer recurses per level and used to die of RecursionError."""


class _LineLoader(yaml.SafeLoader):
    """A SafeLoader that remembers the line of every mapping key, by key path.

    Aliases are refused: a config never needs them, and they are how a few hundred bytes expand into
    gigabytes (billion laughs) or into a cycle. Nesting is bounded, and a value Python cannot build
    (a 5,000-digit integer, 2026-13-45) is reported at its line instead of escaping as ValueError.
    """

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node | None:
        mark = self.peek_event().start_mark  # type: ignore[no-untyped-call]
        if self.check_event(yaml.AliasEvent):
            raise yaml.composer.ComposerError(
                None, None, "aliases (*name) are not allowed in the config; write the value out", mark
            )
        self._depth += 1
        try:
            if self._depth > MAX_CONFIG_DEPTH:
                raise yaml.composer.ComposerError(
                    None, None, f"nested deeper than {MAX_CONFIG_DEPTH} levels", mark
                )
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def construct_object(self, node: yaml.Node, deep: bool = False) -> Any:
        try:
            return super().construct_object(node, deep)
        except (ValueError, OverflowError) as e:
            raise yaml.constructor.ConstructorError(
                None, None, f"cannot read this value ({str(e).split(';')[0]})", node.start_mark
            ) from None


def _key_lines(
    node: yaml.Node, path: tuple[str | int, ...], out: dict[tuple[str | int, ...], int], dups: list[str]
) -> None:
    """Record the line of every key path; collect keys given twice in one mapping (YAML keeps
    only the last silently, so half of a section would be ignored)."""
    out[path] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        seen: dict[str, int] = {}
        for key_node, value_node in node.value:
            key = str(key_node.value)
            line = key_node.start_mark.line + 1
            if key in seen:
                dotted = ".".join(str(p) for p in (*path, key))
                dups.append(f"{line} {dotted}: given twice (first on line {seen[key]}); merge the two")
            seen[key] = line
            _key_lines(value_node, (*path, key), out, dups)
            out[(*path, key)] = line
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _key_lines(item, (*path, i), out, dups)


def key_lines(text: str) -> dict[tuple[str | int, ...], int]:
    """Line number of every key path in a YAML text ({} if it does not parse)."""
    lines: dict[tuple[str | int, ...], int] = {}
    try:
        node = yaml.compose(text, Loader=_LineLoader)
    except yaml.YAMLError:
        return lines
    if node is not None:
        _key_lines(node, (), lines, [])
    return lines


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
        elif e["type"] == "missing" and loc and loc[0] == "policy":
            msg = (
                "required: the usage and privacy policy (purpose, custodian, retention_days, sharing) "
                "must be stated before the device may run; see config/alprd.example.yaml"
            )
        elif "input" in e and e["type"] != "missing" and not isinstance(e["input"], dict | list):
            got = repr(e["input"])
            # a megabyte-long value must not become a megabyte-long message
            msg = f"{msg} (got {got if len(got) <= 80 else got[:76] + ' ...'})"
        problems.append(f"{path}:{_line_for(loc, lines)} {key}: {msg}")
    return problems


def _yaml_error_line(e: yaml.YAMLError, text: str) -> int:
    """The line to blame. PyYAML marks an error found at the end of the file (an unclosed bracket or
    quote) after the last newline, one line past the text: blame where the unclosed thing starts,
    or else the last line with content."""
    mark = getattr(e, "problem_mark", None)
    if mark is None:
        return 1
    if text[mark.index :].strip():
        return int(mark.line) + 1
    last = max(1, len(text[: mark.index].rstrip().splitlines()))
    context = getattr(e, "context_mark", None)
    return min(last, int(context.line) + 1) if context is not None else last


def parse_config(text: str, path: Path) -> Config:
    """Validate YAML text; `path` is used for messages and to resolve relative paths."""
    try:
        loader = _LineLoader(text)
        try:
            node = loader.get_single_node()
            data: Any = loader.construct_document(node) if node is not None else None
        finally:
            loader.dispose()
    except (RecursionError, MemoryError) as e:
        raise ConfigError(f"{path}:1 (yaml): too deeply nested or too large ({type(e).__name__})") from None
    except yaml.YAMLError as e:
        line = _yaml_error_line(e, text)
        context, problem = getattr(e, "context", None), getattr(e, "problem", None)
        cmark = getattr(e, "context_mark", None)
        if context and cmark is not None and int(cmark.line) + 1 != line and text[cmark.index :].strip():
            context = f"{context} (line {int(cmark.line) + 1})"
        what = ": ".join(str(x) for x in (context, problem) if x)
        raise ConfigError(f"{path}:{line} (yaml): {what or e}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}:1 (top level): the file must be a YAML mapping of keys to values")
    lines: dict[tuple[str | int, ...], int] = {}
    if node is not None:
        dups: list[str] = []
        _key_lines(node, (), lines, dups)
        if dups:
            problems = [f"{path}:{d}" for d in dups]
            raise ConfigError("\n".join(problems), problems)
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
        with p.open("rb") as f:
            raw = f.read(MAX_CONFIG_BYTES + 1)
    except OSError as e:
        raise ConfigError(f"{p}:0 (file): cannot read config: {e.strerror}") from None
    if len(raw) > MAX_CONFIG_BYTES:
        raise ConfigError(f"{p}:1 (file): larger than {MAX_CONFIG_BYTES} bytes; is this really the config?")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError(f"{p}:1 (file): not UTF-8 text ({e.reason} at byte {e.start})") from None
    if "\x00" in text:
        raise ConfigError(f"{p}:1 (file): contains NUL bytes; is this really the YAML config?")
    return parse_config(text, p)
