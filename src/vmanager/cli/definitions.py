"""``vmanager define`` and ``undefine``: persistent machine definitions, like virsh's."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from vmanager import state
from vmanager.cli import templates
from vmanager.cli._output import say
from vmanager.errors import ConfigError, StateError
from vmanager.state import records
from vmanager.state.persist import (
    nvram_path,
    remove_image_overlay,
    remove_nvram,
    remove_state_disk,
)


def _parse_disk(text: str) -> dict[str, Any]:
    path, _, size = text.partition(":")
    if not path:
        raise ConfigError(f"--disk {text!r}: give PATH or PATH:SIZE")
    disk: dict[str, Any] = {"path": str(Path(path).resolve()), "format": "qcow2",
                            "interface": "virtio"}
    if size:
        disk["size"] = size
    return disk


def _cloud_init_file(text: str) -> dict[str, Any]:
    """A ``--cloud-init`` file: TOML or JSON with the keys of :class:`~vmanager.CloudInit`."""
    import json
    import tomllib

    from vmanager.images.cloudinit import CloudInit
    path = Path(text)
    try:
        raw = path.read_text()
    except OSError as exc:
        raise ConfigError(f"--cloud-init {text}: {exc.strerror or exc}") from exc
    try:
        data = json.loads(raw) if path.suffix == ".json" else tomllib.loads(raw)
    except ValueError as exc:  # JSONDecodeError and TOMLDecodeError are ValueErrors
        raise ConfigError(f"--cloud-init {text}: not valid "
                          f"{'JSON' if path.suffix == '.json' else 'TOML'}: {exc}") from exc
    CloudInit.from_mapping(data)  # names the bad field now, not at start
    return dict(data)


def cmd_define(args: argparse.Namespace) -> int:
    definition: dict[str, Any] = {
        "memory": args.memory, "cpus": args.cpus, "accel": args.accel, "nics": args.nics,
        "disks": [_parse_disk(d) for d in args.disk],
        "cd": str(Path(args.cd).resolve()) if args.cd else None,
        # UEFI variables are kept between starts, as libvirt keeps a defined domain's
        "firmware": args.firmware,
        "nvram": str(nvram_path(args.name)) if args.firmware == "uefi" else None,
    }
    if args.guest:
        definition["guest"] = args.guest
    elif args.kernel:
        definition.update(kernel=str(Path(args.kernel).resolve()),
                          initrd=str(Path(args.initrd).resolve()) if args.initrd else None,
                          append=args.append)
    elif not definition["disks"] and not definition["cd"] and not args.template:
        raise ConfigError("nothing to boot: give --guest, --kernel, --disk, --cd or "
                          "--template")
    templates.apply_define(args, definition)
    if args.cloud_init:
        definition["cloud_init"] = _cloud_init_file(args.cloud_init)
    record = records.MachineRecord(args.name, definition=definition, persistent=True)
    # build once without starting: validates names, sizes and files now
    state.build_machine(record, for_attach=True)
    with state.locked("machine", args.name):
        existing = records.find(args.name)
        if existing is not None and not args.force:
            raise StateError(f"machine {args.name!r} is already defined (--force replaces "
                             "its definition)", state="defined")
        if existing is not None:
            if existing.lab is not None:
                raise StateError(f"machine {args.name!r} belongs to lab {existing.lab!r}")
            record = replace(record, runtime=existing.runtime)
        records.save(record)
    say(args, {"name": args.name, "defined": True}, f"defined {args.name}")
    return 0


def cmd_undefine(args: argparse.Namespace) -> int:
    with state.locked("machine", args.name):
        record = records.load(args.name)
        if record.lab is not None:
            raise StateError(f"machine {args.name!r} belongs to lab {record.lab!r}; "
                             "'vmanager down' removes it")
        if records.liveness(record) is not None:
            raise StateError(f"machine {args.name!r} has a runtime record; stop it (or "
                             "'vmanager clean' a stale one) first", state="running")
        records.delete(args.name)
        disk = remove_image_overlay(args.name, record.definition)
        remove_nvram(args.name, record.definition)
        remove_state_disk(args.name)
    say(args, {"name": args.name, "undefined": True, "removed_disk": str(disk) if disk else None},
         f"undefined {args.name}" + (f" (removed its disk {disk})" if disk else ""))
    return 0


def add_parsers(add: Callable[..., argparse.ArgumentParser]) -> None:
    """Register ``define`` and ``undefine`` through the machine commands' ``add``."""
    p = add("define", cmd_define, "record a machine definition (persistent, like virsh define)")
    p.add_argument("name")
    boot = p.add_mutually_exclusive_group()
    from vmanager.images import DISTRIBUTIONS
    boot.add_argument("--guest", choices=("tiny", *sorted(DISTRIBUTIONS)),
                      help="boot vmanager's tiny test guest, or an overlay of an image "
                      "vmanager builds (debian-12: built and cached on first start)")
    boot.add_argument("--kernel", help="boot this kernel directly")
    p.add_argument("--initrd")
    p.add_argument("--append", help="kernel command line")
    p.add_argument("--memory", help="RAM, MiB or with a unit (default 256, or a "
                   "template's)")
    p.add_argument("--cpus", type=int, default=1)
    p.add_argument("--accel", choices=("auto", "kvm", "tcg"), default="auto")
    p.add_argument("--firmware", choices=("bios", "uefi"), default="bios",
                   help="SeaBIOS (default) or UEFI (OVMF; its variable store is kept "
                        "between starts and removed by undefine)")
    p.add_argument("--disk", action="append", default=[], metavar="PATH[:SIZE]",
                   help="a qcow2 disk; created with SIZE on first start if missing")
    p.add_argument("--cd", metavar="ISO")
    p.add_argument("--nics", type=int, default=0,
                   help="NICs in the machine's own network namespace")
    p.add_argument("--cloud-init", metavar="FILE",
                   help="a cloud-init seed for the machine: a TOML (or .json) file with "
                   "the keys of a lab's cloud_init table (hostname, users, password, "
                   "ssh_authorized_keys, runcmd, packages, network_config)")
    templates.define_options(p)
    p.add_argument("--force", action="store_true", help="replace an existing definition")
    p = add("undefine", cmd_undefine, "forget a stopped machine's definition")
    p.add_argument("name")
