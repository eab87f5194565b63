"""Machine templates: clones that map one saved guest's RAM (``m.template``).

A template is a directory holding a booted guest's RAM as a file (``ram``), its
device state without the RAM (``state``: a migration stream saved with QEMU's
``x-ignore-shared``) and ``template.json``. It is made from a machine started
with ``template_source=True``, whose RAM is a shared file in its run directory:
``m.save_template(directory)`` pauses it, saves the device state, moves the RAM
file into the directory and ends it.

A machine made with ``template=directory`` starts by mapping that RAM file
copy-on-write (``memory-backend-file`` with ``share=off``) and loading the device
state: its guest resumes where the template's stopped, in milliseconds. Pages
the clone only reads stay the page cache's, shared by every clone, so an idle
clone's QEMU holds little more than what it wrote since (Kata Containers' "VM
templating" and Firecracker's snapshot restore work the same way).

What a clone shares with its template, and the rules that follow:

* **Everything in the guest's memory**: its host name, clock, random state and
  addresses. Give each clone its identity after the start (through the shell or
  agent). A template cannot hold NICs (every clone would use their MAC
  addresses); a clone's NICs are hot-plugged once its state has loaded.
* **Devices**: a clone needs exactly the template's devices and memory, and its
  source's machine type, CPUs, CPU model and firmware (:data:`CONFIG_KEYS`; a
  clone without ``cpu_model`` takes its source's); a clone that differs gets a
  :class:`ConfigError` naming what, before anything loads. A microvm or q35
  clone cannot have NICs (no bus to hot-plug them into); a source with
  hot-plugged DIMMs cannot be saved.
* **No balloon** in either: discarding RAM of a file-backed guest punches holes in
  the file itself, which every clone maps (QEMU 7.2 does so even for a private
  mapping).
* **Disks**: each writable disk of the source is copied into the template,
  flattened, as it was when the state was saved; a clone given no disks runs on
  an overlay of each copy in its run directory (gone when it stops). A clone may
  instead be given its own disks (e.g. lasting overlays of the copies). A
  read-only disk is not copied: clones use the same image. Snapshots of a clone
  cover its overlays; ``save_state``/``migrate`` refuse a clone on overlays that
  go with its run.
* The RAM file must not change while clones use it: vmanager only ever reads it.
"""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vmanager import paths, validate
from vmanager.errors import ConfigError, NotFoundError
from vmanager.machine.migration import device_problems
from vmanager.machine.part import Launch, MachineView, Part
from vmanager.qemu.blockdev import CD_DEVICES, Layer, cd_id, disk_id
from vmanager.qemu.cmdline import CdSpec, DiskSpec

if TYPE_CHECKING:
    from vmanager.qemu.cmdline import MachineSpec

MANIFEST = "template.json"
RAM_FILE = "ram"
STATE_FILE = "state"
FORMAT = 1
#: A manifest larger than this is not one of ours.
MANIFEST_MAX = 64 << 10
CD_DRIVE_ID = cd_id(0)
DISK_FORMATS = ("qcow2", "raw")
#: What a clone's QEMU must run as its template's source's did, beside devices and
#: memory (saved CPU and firmware state only loads into the same; older manifests
#: lack it): the machine type and CPU model as QEMU resolved them (``pc`` is
#: ``pc-i440fx-7.2``), the number of CPUs, ``bios`` or ``uefi``, and the DIMM slots
#: (the ACPI tables' memory hot-plug state is sized by them).
CONFIG_KEYS = ("machine", "cpus", "cpu_model", "firmware", "memory_slots")


@dataclass(frozen=True)
class TemplateDisk:
    """A disk of the template: a copy in its directory (``file``), or a read-only disk."""

    interface: str
    #: the copy's name in the template directory (writable disks; clones get overlays)
    file: str | None = None
    #: a read-only disk's own image, used by every clone as it is
    path: str | None = None
    format: str = "qcow2"

    def to_json(self) -> dict[str, str | None]:
        """The manifest's entry."""
        return {"interface": self.interface, "file": self.file, "path": self.path,
                "format": self.format}


@dataclass(frozen=True)
class TemplateInfo:
    """A saved template: where, how much RAM (MiB), and the devices a clone must have."""

    path: Path
    memory: int
    machine_type: str
    devices: dict[str, str]
    source: str
    #: whether the guest ran when saved (its clones resume it) or was frozen
    running: bool = True
    disks: tuple[TemplateDisk, ...] = ()
    #: the source's :data:`CONFIG_KEYS` (only those the manifest holds)
    config: dict[str, str | int | None] = field(default_factory=dict)

    @property
    def ram(self) -> Path:
        """The guest's RAM, mapped copy-on-write by every clone."""
        return self.path / RAM_FILE

    @property
    def state(self) -> Path:
        """The device state (a migration stream without RAM)."""
        return self.path / STATE_FILE


def load(directory: str | os.PathLike[str]) -> TemplateInfo:
    """Read and check the template in ``directory``.

    Raises:
        NotFoundError: no template there.
        ConfigError: the directory or its files are not a template of this user's.
    """
    path = Path(os.path.abspath(validate.path(directory, what="template")))
    manifest = path / MANIFEST
    if not os.path.lexists(path):
        raise NotFoundError(f"template {str(path)!r} has no {MANIFEST}: the directory does "
                            "not exist (moved or removed? a clone names its template by path)")
    if not manifest.is_file():
        raise NotFoundError(f"template {str(path)!r} has no {MANIFEST} "
                            "(make one with Machine.save_template)")
    why = paths.trusted_path(path)
    if why is not None:
        raise ConfigError(f"template {str(path)!r} cannot be trusted: {why}")
    for name in (MANIFEST, RAM_FILE, STATE_FILE):
        _check_file(path / name)
    raw = manifest.read_bytes()[:MANIFEST_MAX + 1]
    try:
        data = json.loads(raw) if len(raw) <= MANIFEST_MAX else None
    except (UnicodeDecodeError, json.JSONDecodeError):
        data = None
    info = _parse(path, data)
    if info is None:
        raise ConfigError(f"{manifest} is not a vmanager template manifest (format {FORMAT})")
    if (path / RAM_FILE).stat().st_size != info.memory << 20:
        raise ConfigError(f"template {str(path)!r}: its RAM file is not {info.memory} MiB")
    for disk in info.disks:
        if disk.file is not None:
            _check_file(path / disk.file)
    return info


def _parse(path: Path, data: object) -> TemplateInfo | None:
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        return None
    memory, devices, kind = data.get("memory"), data.get("devices"), data.get("machine_type")
    if isinstance(memory, bool) or not isinstance(memory, int) or not isinstance(kind, str):
        return None
    if not isinstance(devices, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in devices.items()):
        return None
    disks = _parse_disks(data.get("disks", []))
    config = data.get("config", {})
    if disks is None or not isinstance(config, dict) or not all(
            k in CONFIG_KEYS and (v is None or isinstance(v, (str, int))) and
            not isinstance(v, bool) for k, v in config.items()):
        return None
    return TemplateInfo(path=path, memory=memory, machine_type=kind, devices=dict(devices),
                        source=str(data.get("source", "")),
                        running=data.get("running") is not False, disks=disks,
                        config=dict(config))


def _parse_disks(raw: object) -> tuple[TemplateDisk, ...] | None:
    if not isinstance(raw, list) or len(raw) > 64:
        return None
    disks = []
    for index, entry in enumerate(raw):
        if not isinstance(entry, dict):
            return None
        interface, file, path, fmt = (entry.get(k) for k in ("interface", "file", "path",
                                                              "format"))
        if not isinstance(interface, str) or fmt not in DISK_FORMATS:
            return None
        if file is not None and file != disk_file(index):
            return None
        if (file is None) == (path is None) or (path is not None and (
                not isinstance(path, str) or not os.path.isabs(path))):
            return None
        disks.append(TemplateDisk(interface=interface, file=file, path=path, format=fmt))
    return tuple(disks)


def disk_file(index: int) -> str:
    """The name of the template's copy of its ``index``-th disk."""
    return f"disk{index}.qcow2"


def _check_file(path: Path) -> None:
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        raise NotFoundError(f"template file {path} is missing") from None
    if not stat.S_ISREG(st.st_mode):
        raise ConfigError(f"template file {path} is not a regular file")
    if st.st_uid != os.geteuid():
        raise ConfigError(f"template file {path} belongs to uid {st.st_uid}, not to this user")


class Templating(Part):
    """Whether this machine's RAM is a template's source file, or a clone's mapping."""

    key = "template"

    def __init__(self, vm: MachineView, *, source: bool,
                 template: str | os.PathLike[str] | None, memory: int,
                 own_disks: Callable[[], int] = lambda: 0,
                 own_cd: Callable[[], bool] = lambda: False) -> None:
        self._vm = vm
        self._own_disks = own_disks
        self._own_cd = own_cd
        self._disks: tuple[DiskSpec, ...] = ()
        #: node names of the template's writable disks this clone runs on (snapshots cover them)
        self.disk_ids: list[str] = []
        #: the template of a clone another process started (``Machine.attach``)
        self._attached: str | None = None
        if not isinstance(source, bool):
            raise ConfigError(f"template_source must be True or False, got {source!r}")
        self.source = source
        #: the template this machine is a clone of (``None``: it boots)
        self.info: TemplateInfo | None = None
        if template is not None:
            if source:
                raise ConfigError("a machine cannot be both a template's source "
                                  "(template_source=True) and a clone (template=)")
            self.info = load(template)
            if self.info.memory != memory:
                raise ConfigError(f"machine {vm.name!r} has memory {memory} MiB but template "
                                  f"{str(self.info.path)!r} was saved with {self.info.memory} "
                                  "MiB; a clone needs the template's memory")

    @property
    def ram_file(self) -> Path | None:
        """The file holding the guest's RAM, or ``None`` for anonymous memory."""
        if self.info is not None:
            return self.info.ram
        return self._vm.run_dir / RAM_FILE if self.source else None

    def prepare(self, launch: Launch) -> None:
        """A clone given no disks gets the template's: an overlay of each copy, in its run dir."""
        self._disks, self.disk_ids = (), []
        info = self.info
        if info is None or not info.disks or self._own_disks():
            return
        from vmanager.storage import qemu_img
        specs = []
        for index, disk in enumerate(info.disks):
            if disk.file is None:
                assert disk.path is not None
                layers: tuple[Layer, ...] = (Layer(disk.path, disk.format),)
            else:
                overlay = launch.run_dir / disk_file(index)
                qemu_img.create(overlay, fmt="qcow2", backing=str(info.path / disk.file),
                                backing_fmt="qcow2")
                layers = (Layer(str(overlay), "qcow2"),
                          Layer(str(info.path / disk.file), "qcow2"))
            specs.append(DiskSpec(layers=layers, interface=disk.interface,
                                  readonly=disk.file is None))
        self._disks = tuple(specs)  # the overlays go with the run directory
        self.disk_ids = [disk_id(i) for i, d in enumerate(info.disks) if d.file is not None]

    def contribute(self, spec: MachineSpec) -> MachineSpec:
        """File-backed RAM (shared for a source, copy-on-write for a clone), no balloon.

        A clone given no CD gets an empty drive where its template had one (a
        first boot's cloud-init seed, say), so that its devices match.
        """
        ram = self.ram_file
        if ram is None:
            return spec
        cd = spec.cd
        if cd is None and self.empty_cd_interface() is not None:
            cd = CdSpec(None, interface=str(self.empty_cd_interface()))
        return replace(spec, ram_file=str(ram), ram_shared=self.source, balloon=False,
                       disks=spec.disks + self._disks, cd=cd)

    def empty_cd_interface(self) -> str | None:
        """The interface of the template's CD drive, for a clone without a CD of its own."""
        if self.info is None or self._own_cd():
            return None
        kind = self.info.devices.get(CD_DRIVE_ID)
        return next((i for i, d in CD_DEVICES.items() if d == kind), None)

    def runtime(self) -> dict[str, Any]:
        """Which template a running clone maps, and the template disks it runs on."""
        return {"source": self.source, "disks": list(self.disk_ids),
                "template": str(self.info.path) if self.info is not None else self._attached}

    def restore(self, runtime: Mapping[str, Any]) -> None:
        """A clone started by another process: its template and the disks snapshots cover."""
        disks, template = runtime.get("disks"), runtime.get("template")
        if isinstance(disks, list) and all(isinstance(d, str) for d in disks):
            self.disk_ids = list(disks)
        self._attached = template if isinstance(template, str) else None

    def check_config(self, config: dict[str, str | int | None]) -> None:
        """Refuse a clone whose QEMU runs unlike its template's source (:data:`CONFIG_KEYS`)."""
        info = self.info
        assert info is not None
        differ = config_mismatch(info, config)
        if differ:
            raise ConfigError(f"machine {self._vm.name!r} cannot be a clone of template "
                              f"{str(info.path)!r}: it has {differ}; a template's "
                              "saved CPU and firmware state only loads into a machine with "
                              "the machine type, CPUs, CPU model, firmware and memory slots "
                              "of its source")

    def check_clone(self, devices: dict[str, str]) -> None:
        """Refuse a clone whose devices differ from its template's (QEMU not yet loaded)."""
        info = self.info
        assert info is not None
        problems = device_problems(info.devices, devices, who="it")
        if any(p.startswith("it lacks") for p in problems):  # only its definition's devices
            problems.append("(a device hot-plugged into the source cannot be in a clone: "
                            "plug it into the clones after their start)")
        if problems:
            raise ConfigError(f"machine {self._vm.name!r} cannot be a clone of template "
                              f"{str(info.path)!r}: " + "; ".join(problems))


def config_mismatch(info: TemplateInfo, config: Mapping[str, str | int | None]) -> str | None:
    """Which of ``config``'s :data:`CONFIG_KEYS` differ from the template's, named; or ``None``.

    Only the keys both have are compared (a front-end knows ``cpus`` and
    ``firmware`` before anything starts; QEMU's resolved names only once it runs).
    """
    differ = [f"{k} {config[k]!r} (the template's: {v!r})"
              for k, v in info.config.items() if k in config and config[k] != v]
    return ", ".join(differ) or None


def write(directory: Path, *, ram: Path, memory: int, machine_type: str,
          config: dict[str, str | int | None],
          devices: dict[str, str], source: str, running: bool,
          disks: tuple[TemplateDisk, ...]) -> TemplateInfo:
    """Move or copy ``ram`` into ``directory`` (state already there) and write the manifest."""
    target = directory / RAM_FILE
    try:
        os.link(ram, target)
    except OSError:
        copy_sparse(ram, target)
    os.chmod(target, 0o600)
    data = {"format": FORMAT, "memory": memory, "machine_type": machine_type,
            "config": config, "devices": devices, "source": source, "running": running,
            "disks": [d.to_json() for d in disks]}
    tmp = directory / f".{MANIFEST}.tmp"
    tmp.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")
    os.replace(tmp, directory / MANIFEST)
    return load(directory)


def copy_sparse(src: Path, dst: Path) -> None:
    """Copy ``src`` to a new file ``dst``, leaving its holes holes (a guest's RAM is mostly)."""
    with open(src, "rb") as fin, open(dst, "xb") as fout:
        size = os.fstat(fin.fileno()).st_size
        offset = 0
        while offset < size:
            try:
                start = os.lseek(fin.fileno(), offset, os.SEEK_DATA)
            except OSError:  # ENXIO: only a hole is left
                break
            end = os.lseek(fin.fileno(), start, os.SEEK_HOLE)
            fin.seek(start)
            fout.seek(start)
            remaining = end - start
            while remaining:
                chunk = fin.read(min(remaining, 8 << 20))
                if not chunk:
                    break
                fout.write(chunk)
                remaining -= len(chunk)
            offset = end
        fout.truncate(size)


