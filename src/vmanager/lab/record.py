"""What a lab made, kept in ``state_dir()/labs/NAME.json`` so any process can undo it."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vmanager import paths, validate
from vmanager.errors import StateError


@dataclass
class LabRecord:
    """The lab's file, its digest at ``up`` and the objects made, in creation order.

    Each item is a dict with ``kind`` (``host``, ``switch``, ``router``,
    ``machine``) and ``name``, plus what removing it needs.
    """

    name: str
    file: str
    digest: str
    made: list[dict[str, Any]] = field(default_factory=list)

    def find(self, kind: str, name: str) -> dict[str, Any] | None:
        """The item of ``kind`` called ``name``."""
        for item in self.made:
            if item["kind"] == kind and item["name"] == name:
                return item
        return None

    def put(self, item: dict[str, Any]) -> None:
        """Add or replace an item (by kind and name) and save."""
        old = self.find(item["kind"], item["name"])
        if old is not None:
            self.made.remove(old)
        self.made.append(item)
        save(self)

    def drop(self, kind: str, name: str) -> None:
        """Forget an item and save."""
        old = self.find(kind, name)
        if old is not None:
            self.made.remove(old)
            save(self)


def labs_dir() -> Path:
    """Where lab records live."""
    return paths.private_dir(paths.state_dir() / "labs")


def path_of(name: str) -> Path:
    """The record file of lab ``name``."""
    return labs_dir() / f"{validate.name(name, what='lab name')}.json"


def load(name: str) -> LabRecord | None:
    """The record of lab ``name``, ``None`` when the lab is not up."""
    try:
        data = json.loads(path_of(name).read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise StateError(f"lab record {path_of(name)} is unreadable: {exc}") from exc
    return LabRecord(name=data["name"], file=data["file"], digest=data["digest"],
                     made=list(data["made"]))


def all_records() -> list[LabRecord]:
    """Every lab that is up."""
    out = []
    for p in sorted(labs_dir().glob("*.json")):
        rec = load(p.stem)
        if rec is not None:
            out.append(rec)
    return out


def save(record: LabRecord) -> None:
    """Write atomically."""
    path = path_of(record.name)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps({"name": record.name, "file": record.file,
                               "digest": record.digest, "made": record.made}, indent=2))
    os.replace(tmp, path)


def delete(name: str) -> None:
    """Remove the record."""
    path_of(name).unlink(missing_ok=True)
