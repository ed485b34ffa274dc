"""The layout issue 20 asked for, kept: modules a reader can take in, one definition per idea, typed
seams between the device and the privacy core, library code that never imports the command line."""

from __future__ import annotations

import ast
import dataclasses
import tomllib
from pathlib import Path

from alprd.payloads import PUBLISHED, StatusBody
from alprd.schemas import json_schema

ROOT = Path(__file__).resolve().parent.parent
ALPRD = ROOT / "alprd"
MAX_LINES = 600


def _modules(under: Path = ALPRD) -> list[Path]:
    return sorted(under.rglob("*.py"))


def _name(p: Path) -> str:
    return str(p.relative_to(ROOT))


def test_no_module_is_over_600_lines() -> None:
    lines = {_name(p): len(p.read_text(encoding="utf-8").splitlines()) for p in _modules()}
    long = {name: n for name, n in lines.items() if n > MAX_LINES}
    assert not long, f"split these by concern: {long}"


def test_one_definition_per_idea() -> None:
    wanted = {"OutboxItem", "Clock", "Backoff", "Exit", "Command", "Track", "Match", "Hit", "Pass"}
    found: dict[str, list[str]] = {}
    for p in _modules():
        for node in ast.walk(ast.parse(p.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ClassDef) and node.name in wanted:
                found.setdefault(node.name, []).append(_name(p))
            if isinstance(node, ast.Assign | ast.AnnAssign):
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                for t in targets:
                    if isinstance(t, ast.Name | ast.Tuple) and any(
                        isinstance(n, ast.Name) and n.id.startswith("EXIT_") for n in ast.walk(t)
                    ):
                        found.setdefault("EXIT_*", []).append(_name(p))
    assert found == {
        "OutboxItem": ["alprd/types.py"], "Command": ["alprd/types.py"], "Track": ["alprd/types.py"],
        "Match": ["alprd/types.py"], "Hit": ["alprd/types.py"], "Pass": ["alprd/types.py"],
        "Clock": ["alprd/clock.py"], "Backoff": ["alprd/clock.py"], "Exit": ["alprd/exits.py"],
    }


def _any_in(annotation: ast.expr | None) -> bool:
    if annotation is None:
        return False
    return any(
        (isinstance(n, ast.Name) and n.id == "Any") or (isinstance(n, ast.Attribute) and n.attr == "Any")
        or (isinstance(n, ast.Constant) and isinstance(n.value, str) and "Any" in n.value)
        for n in ast.walk(annotation)
    )


def _public_functions(tree: ast.Module) -> list[tuple[str, ast.FunctionDef | ast.AsyncFunctionDef]]:
    out: list[tuple[str, ast.FunctionDef | ast.AsyncFunctionDef]] = []
    for node in tree.body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and not node.name.startswith("_"):
            out.append((node.name, node))
        if isinstance(node, ast.ClassDef) and not node.name.startswith("_"):
            for item in node.body:
                public = not item.name.startswith("_") or item.name == "__init__" if isinstance(
                    item, ast.FunctionDef | ast.AsyncFunctionDef) else False
                if public:
                    out.append((f"{node.name}.{item.name}", item))  # type: ignore[union-attr]
    return out


def test_no_any_in_public_signatures_of_device_and_privacy() -> None:
    offenders = []
    for package in ("device", "privacy"):
        for p in _modules(ALPRD / package):
            for name, fn in _public_functions(ast.parse(p.read_text(encoding="utf-8"))):
                a = fn.args
                args = [*a.posonlyargs, *a.args, *a.kwonlyargs, *filter(None, (a.vararg, a.kwarg))]
                if any(_any_in(x.annotation) for x in args) or _any_in(fn.returns):
                    offenders.append(f"{_name(p)}: {name}")
    assert not offenders, offenders


def _imports(p: Path) -> list[str]:
    """Every module `p` imports, as an absolute name (`from . import x` counts as `package.x`)."""
    package = ".".join(p.relative_to(ROOT).with_suffix("").parts[:-1])
    out: list[str] = []
    for node in ast.walk(ast.parse(p.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            out += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parent, *([base] if base else [])])
            out += [base, *(f"{base}.{a.name}" for a in node.names)]
    return out


def test_library_code_never_imports_the_command_line() -> None:
    offenders = [
        f"{_name(p)}: {m}" for p in _modules()
        if not p.is_relative_to(ALPRD / "cli") and p.name != "__main__.py"
        for m in _imports(p) if m == "alprd.cli" or m.startswith("alprd.cli.")
    ]
    assert not offenders, offenders
    assert "alprd.cli" in _imports(ALPRD / "__main__.py")  # the guard sees relative imports


def test_every_subpackage_is_in_the_wheel() -> None:
    packages = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {".".join(p.parent.relative_to(ROOT).parts) for p in ALPRD.rglob("__init__.py")}
    assert packages == found | {"alprd.models"}


# --- payloads: the schema of every topic ------------------------------------------------------------


def test_every_published_body_has_a_schema_naming_its_json_keys() -> None:
    assert len({b.topic for b in PUBLISHED}) == len(PUBLISHED)
    for body in PUBLISHED:
        schema = json_schema(body)
        assert set(schema["properties"]) == {f.name for f in dataclasses.fields(body)}  # type: ignore[call-overload]
        assert str(schema["title"]).endswith("/" + body.topic)


def test_fields_that_are_omitted_when_empty_are_omitted() -> None:
    will = StatusBody.of("offline", 3, "dev", 1e9, None).as_dict()
    assert will == {"state": "offline", "session": 3, "device_id": "dev", "ts": 1e9}
