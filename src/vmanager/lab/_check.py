"""Validation helpers of lab files: find a field's line, fail with file, line and field."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from vmanager.errors import ConfigError, LabFileError


class Locator:
    """Finds the line of a table or key in TOML source (tomllib keeps no positions)."""

    _HEADER = re.compile(r"^\s*\[\[?\s*([^\]]+?)\s*\]\]?")
    _KEY = re.compile(r"^\s*([A-Za-z0-9_\-\"'.]+)\s*=")

    def __init__(self, source: str) -> None:
        self.lines = source.splitlines()

    def line(self, dotted: tuple[str, ...]) -> int | None:
        best: int | None = None
        table: tuple[str, ...] = ()
        arrays: dict[tuple[str, ...], int] = {}
        for number, text in enumerate(self.lines, 1):
            header = self._HEADER.match(text)
            if header:
                table = tuple(p.strip().strip("\"'") for p in header.group(1).split("."))
                if text.lstrip().startswith("[["):
                    index = arrays.get(table, -1) + 1
                    arrays[table] = index
                    table = (*table, str(index))
                if table and dotted[:len(table)] == table:
                    best = number
                continue
            key = self._KEY.match(text)
            if key:
                path = table + tuple(p.strip("\"'") for p in key.group(1).split("."))
                if len(path) <= len(dotted) and dotted[:len(path)] == path:
                    return number
        return best


class Checker:
    """Checks values of a parsed file; errors name the file, the line and the field.

    ``locate`` maps a field's path to its line (the TOML :class:`Locator`, or
    the YAML marks of a containerlab file).
    """

    def __init__(self, path: Path, source: str,
                 locate: Callable[[tuple[str, ...]], int | None] | None = None) -> None:
        self.path = path
        self.locate = locate or Locator(source).line
        #: directories the file's paths may lie in (see lab._confine); its own by default
        self.allowed: list[Path] = [
            (path.parent if path.name != "<lab>" else Path.cwd()).resolve()]

    def fail(self, where: tuple[str, ...], message: str) -> LabFileError:
        return LabFileError(message, path=str(self.path), line=self.locate(where),
                            field=".".join(where) or None)

    def table(self, value: object, where: tuple[str, ...]) -> Mapping[str, Any]:
        if not isinstance(value, dict):
            raise self.fail(where, f"must be a table, not {type(value).__name__}")
        return value

    def keys(self, data: Mapping[str, Any], where: tuple[str, ...], allowed: set[str],
             required: set[str] = frozenset()) -> None:  # type: ignore[assignment]
        for key in data:
            if key not in allowed:
                raise self.fail((*where, key), f"unknown key {key!r}; allowed: "
                                f"{', '.join(sorted(allowed))}")
        for key in sorted(required):
            if key not in data:
                raise self.fail(where, f"missing required key {key!r}")

    def typed(self, data: Mapping[str, Any], key: str, kind: type | tuple[type, ...],
              where: tuple[str, ...], default: Any = None) -> Any:
        if key not in data:
            return default
        value = data[key]
        if isinstance(value, bool) and kind is int:
            raise self.fail((*where, key), f"must be an integer, not {value!r}")
        if not isinstance(value, kind):
            names = kind.__name__ if isinstance(kind, type) else "/".join(
                k.__name__ for k in kind)
            raise self.fail((*where, key), f"must be {names}, not {type(value).__name__} "
                            f"({value!r})")
        return value

    def check(self, where: tuple[str, ...], func: Callable[..., Any], *args: Any,
              **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except ConfigError as exc:
            if isinstance(exc, LabFileError):
                raise
            raise self.fail(where, str(exc)) from exc
