"""Machine templates from the command line (:mod:`vmanager.machine.template`).

``vmanager define NAME --guest tiny --template-source`` defines a machine whose
RAM is a shared file; once it runs (``vmanager start``) and its guest is set up
(``vmanager exec``), ``vmanager save-template NAME DIR`` saves it as a template
in the new directory DIR and ends it. ``vmanager define CLONE --guest tiny
--template DIR`` defines a clone: ``vmanager start CLONE`` resumes the
template's guest instead of booting (its NICs are hot-plugged afterwards).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import Any

from vmanager.cli._output import say
from vmanager.errors import ConfigError


def define_options(p: argparse.ArgumentParser) -> None:
    """``define``'s ``--template-source`` and ``--template DIR`` (one or the other)."""
    group = p.add_mutually_exclusive_group()
    group.add_argument("--template-source", action="store_true",
                       help="keep the guest's RAM in a shared file, so that 'vmanager "
                       "save-template' can save the running machine as a template "
                       "(no NICs; its writable disks are copied into the template)")
    group.add_argument("--template", metavar="DIR",
                       help="a clone of the template saved in DIR: 'start' resumes its "
                       "guest in a fraction of a second instead of booting; it runs on "
                       "overlays of the template's disks (gone when it stops) unless given "
                       "--disk; it needs no boot options; --memory defaults to the "
                       "template's")


def apply_define(args: argparse.Namespace, definition: dict[str, Any]) -> None:
    """Put ``--template-source``/``--template`` into ``definition``; check the template now.

    Raises:
        NotFoundError: DIR holds no template.
        ConfigError: DIR is not a usable template, or --memory differs from its memory.
    """
    if args.template_source:
        # what save-template refuses, refused now rather than after the guest is set up
        if args.nics:
            raise ConfigError("--template-source: a template cannot hold NICs (every clone "
                              "would use their MAC addresses); give the clones --nics")
        definition["template_source"] = True
    if args.template is None:
        if definition["memory"] is None:
            definition["memory"] = 256
        return
    if args.guest and args.guest != "tiny":
        raise ConfigError(f"--template with --guest {args.guest}: a clone runs on the "
                          "template's copy of the source's disk, not on a new overlay of "
                          "the image; leave --guest out")
    if args.cloud_init:
        raise ConfigError("--template with --cloud-init: cloud-init runs when a guest boots, "
                          "and a clone does not boot (it resumes the template's guest)")
    from vmanager.machine import Machine
    from vmanager.machine.template import load
    info = load(args.template)
    if definition["memory"] is None:
        definition["memory"] = info.memory
    definition["template"] = str(info.path)
    # the library's own checks (the template's files, the memory), without starting
    Machine(args.name, memory=definition["memory"], template=info.path)


def cmd_save_template(args: argparse.Namespace) -> int:
    from vmanager.cli.machines import attached
    directory = Path(args.directory).absolute()
    with attached(args.name, args.timeout) as m:
        info = m.save_template(directory, timeout=args.timeout)
    say(args, {"name": args.name, "template": str(info.path), "memory": info.memory,
               "running": info.running},
        f"saved {args.name} as template {info.path} ({info.memory} MiB); {args.name} "
        f"has ended (start clones with 'vmanager define NAME --template {info.path}')")
    return 0


def add_parsers(add: Callable[..., argparse.ArgumentParser]) -> None:
    """Register ``save-template`` through the machine commands' ``add``."""
    p = add("save-template", cmd_save_template, "save a running machine (defined with "
            "--template-source) as a template in the new directory DIR, and end it",
            timeout=600.0)
    p.add_argument("name")
    p.add_argument("directory", metavar="DIR", help="a new directory (it must not exist)")

