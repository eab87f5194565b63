"""The cloud-init seed of a machine (``Machine(..., cloud_init=CloudInit(...))``).

At every start the :class:`~vmanager.CloudInit` is written as a NoCloud seed
ISO (volume ``cidata``) into the machine's private run directory and put in
its CD drive, where cloud-init looks for it. The ISO goes with the run
directory; the CD drive is empty again once the machine stops.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from vmanager.errors import ConfigError
from vmanager.machine.part import Launch, MachineView, Part

if TYPE_CHECKING:
    from vmanager.images.cloudinit import CloudInit
    from vmanager.machine.cdrom import CdDrive
    from vmanager.storage import CD

SEED_ISO = "cidata.iso"


class CloudInitSeed(Part):
    """Builds the seed and lends the CD drive to it while the machine runs."""

    key = "cloud_init"

    def __init__(self, vm: MachineView, cloud_init: CloudInit | None, cdrom: CdDrive) -> None:
        from vmanager.images.cloudinit import CloudInit
        if cloud_init is not None and not isinstance(cloud_init, CloudInit):
            raise ConfigError(f"cloud_init takes a CloudInit, got {cloud_init!r}")
        if cloud_init is not None and cdrom.cd is not None:
            raise ConfigError("cloud_init's seed takes the CD drive: give cd or cloud_init, "
                              "not both")
        self._vm = vm
        self.cloud_init = cloud_init
        self._cdrom = cdrom
        self._seed: CD | None = None

    def prepare(self, launch: Launch) -> None:
        """Write the seed ISO into the run directory and put it in the drive."""
        if self.cloud_init is None:
            return
        self._seed = self.cloud_init.seed(output=launch.run_dir / SEED_ISO)
        self._cdrom.cd = self._seed
        launch.undo.push("take the cloud-init seed out of the CD drive", self._unlend)

    def _unlend(self) -> None:
        if self._seed is not None and self._cdrom.cd is self._seed:
            self._cdrom.cd = None
        self._seed = None

    def teardown(self) -> None:
        """The seed went with the run directory; the drive is empty again."""
        self._unlend()

    def runtime(self) -> dict[str, Any]:
        """Whether the machine booted with a seed."""
        return {"seeded": self._seed is not None}

    def restore(self, runtime: Mapping[str, Any]) -> None:
        """A reattached machine: its drive holds the seed (the CD drive part restores it)."""
        if runtime.get("seeded"):
            self._seed = self._cdrom.cd

    def release(self) -> None:
        """Let go; the running machine keeps its seed."""
        self._seed = None
