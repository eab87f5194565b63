"""Lab machines that are clones of a template: ``template = "PATH"`` in ``[machines.NAME]``.

A clone resumes the guest saved in the template directory instead of booting
(:mod:`vmanager.machine.template`); its NICs are hot-plugged once its state has
loaded, so its lab wiring is the same as a booted machine's. A clone without
``disks`` runs on overlays of the template's copies of its source's disks, which
go when it stops; ``disks`` of its own (e.g. overlays of those copies) last.

Parsing only resolves and confines the path (like a disk's: inside the lab
file's directory unless ``[lab] allow_paths`` says otherwise), so that
``inspect`` and ``down`` work whatever became of the template. ``up`` checks
every template of the machines it starts before it makes anything
(:func:`check`), naming the file, line and field.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping
from typing import Any

from vmanager.errors import ConfigError, NotFoundError
from vmanager.lab._check import Checker
from vmanager.lab.model import Lab

#: keys that cannot go with ``template``
_EXCLUDED = {
    "cloud_init": "cloud-init runs when a guest boots, and a clone does not boot (it "
                  "resumes the template's guest)",
}


def parse(c: Checker, body: Mapping[str, Any], where: tuple[str, ...],
          resolve: Callable[[str, tuple[str, ...]], str]) -> tuple[str | None, int | None]:
    """``template``: its resolved, confined path, and its memory if it can be read now.

    The memory is the default of a clone's ``memory`` (a clone needs its
    template's); ``None`` when the file gives ``memory`` or the template cannot be
    read here (``up`` then names the problem).
    """
    if "template" not in body:
        return None, None
    key = (*where, "template")
    value = c.typed(body, "template", str, where)
    for other, why in _EXCLUDED.items():
        if other in body:
            raise c.fail(key, f"a clone of a template cannot have {other}: {why}")
    guest = body.get("guest")
    if isinstance(guest, str) and guest != "tiny":
        raise c.fail(key, f"a clone of a template cannot have guest = {guest!r}: it runs on "
                     "the template's copy of the source's disk, not on a new overlay of the "
                     "image; leave guest out")
    path = resolve(value, key)
    if "memory" in body:
        return path, None
    from vmanager.machine.template import load
    with contextlib.suppress(ConfigError, NotFoundError, OSError):
        return path, load(path).memory
    return path, None


def check(lab: Lab, *, running: Callable[[str], bool] = lambda name: False) -> None:
    """Refuse a lab whose clones' templates are missing, not templates, or of other memory,
    CPUs or firmware.

    Machines for which ``running(name)`` is true are skipped (``up`` keeps them).

    Raises:
        LabFileError: naming the file, line and ``machines.NAME.template``.
    """
    from vmanager.machine.template import config_mismatch, load
    c: Checker | None = None
    for m in lab.machines:
        if m.template is None or running(m.name):
            continue
        problem = None
        try:
            info = load(m.template)
        except (ConfigError, NotFoundError) as exc:
            problem = str(exc)
        else:
            if info.memory != m.memory:
                problem = (f"template {str(info.path)!r} was saved with {info.memory} MiB but "
                           f"machine {m.name!r} has memory {m.memory} MiB; a clone needs its "
                           "template's memory (leave memory out to take it)")
            elif differ := config_mismatch(info, {"cpus": m.cpus, "firmware": m.firmware}):
                problem = (f"it has {differ}: a clone needs the CPUs and firmware of its "
                           f"template's source ({str(info.path)!r})")
        if problem is not None:
            if c is None:
                c = Checker(lab.path, lab.source)
            raise c.fail(("machines", m.name, "template"), f"machine {m.name!r}: {problem}")


__all__ = ["check", "parse"]
