"""Solution: one implementation of a definition, with its build spec and source files."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from fib_runtime.schema._parse import (
    as_dict,
    extras,
    fail,
    omissible,
    opt,
    put,
    req,
    str_list,
    text,
)

_SPEC_KEYS = frozenset({
    "language", "target_hardware", "entry_point", "destination_passing_style", "binding",
    "dependencies",
})
_SOURCE_KEYS = frozenset({"path", "content"})
_SOLUTION_KEYS = frozenset({"name", "definition", "author", "description", "spec", "sources"})
MAX_NAME_BYTES = 255  # of one path part (NAME_MAX on Linux and macOS)
MAX_PATH_BYTES = 4096


@dataclass(frozen=True, slots=True)
class BuildSpec:
    """How to build and call a solution."""

    language: str
    target_hardware: tuple[str, ...]
    entry_point: str
    destination_passing_style: bool | None = None
    binding: str | None = None
    dependencies: tuple[str, ...] | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)

    @property
    def dps(self) -> bool:
        """Destination-passing style (the schema's default is true)."""
        return True if self.destination_passing_style is None else self.destination_passing_style

    @property
    def entry_file(self) -> str:
        return self.entry_point.split("::", 1)[0]

    @property
    def entry_function(self) -> str:
        return self.entry_point.split("::", 1)[1]

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "language": self.language, "target_hardware": list(self.target_hardware),
            "entry_point": self.entry_point,
        }
        put(out, "destination_passing_style", self.destination_passing_style)
        put(out, "binding", self.binding)
        put(out, "dependencies", None if self.dependencies is None else list(self.dependencies))
        return {**out, **self.extra}


@dataclass(frozen=True, slots=True)
class SourceFile:
    """One source file of a solution; `path` is relative to the solution's folder."""

    path: str
    content: str
    extra: Mapping[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"path": self.path, "content": self.content, **self.extra}


@dataclass(frozen=True, slots=True)
class Solution:
    """A FlashInfer Trace Solution."""

    name: str
    definition: str
    author: str
    spec: BuildSpec
    sources: tuple[SourceFile, ...]
    description: str | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, data: Any) -> Solution:
        data = as_dict(data, "")
        spec = _parse_spec(req(data, "spec", dict, ""))
        raw_sources = req(data, "sources", list, "")
        if not raw_sources:
            raise fail("sources", "at least one source file is required")
        sources = tuple(_parse_source(s, f"sources[{i}]") for i, s in enumerate(raw_sources))
        paths = [s.path for s in sources]
        if len(set(paths)) != len(paths):
            raise fail("sources", "duplicate source paths")
        _check_file_folder_clash(paths)
        if spec.entry_file not in paths:
            raise fail("spec.entry_point", f"file '{spec.entry_file}' is not among the sources")
        return cls(
            name=text(data, "name", ""), definition=text(data, "definition", ""),
            author=text(data, "author", ""), spec=spec, sources=sources,
            description=opt(data, "description", str, ""), extra=extras(data, _SOLUTION_KEYS),
        )

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "name": self.name, "definition": self.definition, "author": self.author,
        }
        put(out, "description", self.description)
        out["spec"] = self.spec.to_dict()
        out["sources"] = [s.to_dict() for s in self.sources]
        return {**out, **self.extra}


def _parse_spec(data: dict[str, Any]) -> BuildSpec:
    path = "spec"
    entry = req(data, "entry_point", str, path)
    file, sep, function = entry.partition("::")
    if not sep or not file or not function.isidentifier():
        raise fail(f"{path}.entry_point", f"must be 'file::function', got {entry!r}")
    target = str_list(data, "target_hardware", path, empty_ok=True)
    if not target:
        raise fail(f"{path}.target_hardware",
                   "required: a list of at least one name (e.g. 'any', 'cuda', 'H100')")
    return BuildSpec(
        language=req(data, "language", str, path), target_hardware=target, entry_point=entry,
        destination_passing_style=omissible(data, "destination_passing_style", bool, path),
        binding=opt(data, "binding", str, path),
        dependencies=str_list(data, "dependencies", path), extra=extras(data, _SPEC_KEYS),
    )


def _parse_source(value: Any, path: str) -> SourceFile:
    data = as_dict(value, path)
    rel = req(data, "path", str, path)
    check_relative_path(rel, f"{path}.path")
    return SourceFile(rel, text(data, "content", path), extras(data, _SOURCE_KEYS))


def check_relative_path(rel: str, field_path: str) -> None:
    """Refuse a path that cannot name a file inside its folder on every system: empty,
    absolute, escaping (`..`, `~`), with a NUL, an empty or `.` part, or a part over 255
    bytes (a file name's limit) or a whole over 4096 bytes."""
    parts = rel.replace("\\", "/").split("/")
    if not rel or rel.startswith("~") or parts[0] == "" or ".." in parts:
        raise fail(field_path, f"path {rel!r} must stay inside the solution's folder")
    if "\0" in rel:
        raise fail(field_path, f"path {rel!r} contains a NUL character")
    if "" in parts or "." in parts:
        raise fail(field_path, f"path {rel!r} has an empty or '.' part")
    if any(len(part.encode(errors="surrogatepass")) > MAX_NAME_BYTES for part in parts) or \
            len(rel.encode(errors="surrogatepass")) > MAX_PATH_BYTES:
        raise fail(field_path, f"path {rel[:40]!r}... is too long (a part may have "
                   f"{MAX_NAME_BYTES} bytes, the whole {MAX_PATH_BYTES})")


def _check_file_folder_clash(paths: list[str]) -> None:
    """A source that is also the folder of another (`pkg` and `pkg/a.py`) cannot be written."""
    normal = [p.replace("\\", "/") for p in paths]
    files = set(normal)
    for i, path in enumerate(normal):
        parts = path.split("/")
        for depth in range(1, len(parts)):
            folder = "/".join(parts[:depth])
            if folder in files:
                raise fail(f"sources[{i}].path",
                           f"path {path!r} needs a folder '{folder}', which is also a source file")
