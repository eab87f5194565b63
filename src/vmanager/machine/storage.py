"""Disks and CD-ROMs of a Machine."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from vmanager.errors import ConfigError
from vmanager.machine.base import LaunchContext, MachineBase

if TYPE_CHECKING:
    from vmanager.storage import CD, Harddrive


class StorageMixin(MachineBase):
    """Harddrives and the CD given to the Machine."""

    harddrives: list[Harddrive]
    cd: CD | None

    def _init_storage(self, harddrives: Harddrive | Sequence[Harddrive] | None,
                      cd: CD | None) -> None:
        drives: list[Harddrive] = []
        if harddrives is not None or cd is not None:
            from vmanager.storage import CD, Harddrive
            if isinstance(harddrives, Harddrive):
                drives = [harddrives]
            elif harddrives is not None:
                drives = list(harddrives)
            for d in drives:
                if not isinstance(d, Harddrive):
                    raise ConfigError(f"harddrives takes Harddrive objects, got {d!r}")
            if cd is not None and not isinstance(cd, CD):
                raise ConfigError(f"cd takes one CD object, got {cd!r}")
        self.harddrives = drives
        self.cd = cd

    def _prepare_launch(self, ctx: LaunchContext) -> None:
        super()._prepare_launch(ctx)
        for index, drive in enumerate(self.harddrives):
            ctx.add(*drive.qemu_args(index))
        if self.cd is not None:
            ctx.add(*self.cd.qemu_args(0))
