"""NICs of a Machine: its own network namespace and VirtualNics handed to QEMU."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from vmanager.errors import ConfigError
from vmanager.machine.base import LaunchContext, MachineBase

if TYPE_CHECKING:
    from vmanager.net import Namespace, VirtualNic


class NetworkMixin(MachineBase):
    """``nics=N`` makes N VirtualNics in the machine's own namespace (named after it)."""

    nics: list[VirtualNic]
    _nic_count: int
    _own_nics: list[VirtualNic]
    _namespace: Namespace | None

    def _init_network(self, nics: int | Sequence[VirtualNic]) -> None:
        self._own_nics = []
        self._namespace = None
        if isinstance(nics, bool):
            raise ConfigError(f"nics takes a count or a list of VirtualNic, got {nics!r}")
        if isinstance(nics, int):
            if not 0 <= nics <= 32:
                raise ConfigError(f"nics must be between 0 and 32, got {nics}")
            self._nic_count = nics
            self.nics = []
        else:
            from vmanager.net import VirtualNic
            given = list(nics)
            for nic in given:
                if not isinstance(nic, VirtualNic):
                    raise ConfigError(f"nics takes VirtualNic objects, got {nic!r}")
            self._nic_count = 0
            self.nics = given

    @property
    def namespace(self) -> str:
        """The name of the machine's own network namespace."""
        return self.name

    def _prepare_launch(self, ctx: LaunchContext) -> None:
        super()._prepare_launch(ctx)
        if self._nic_count == 0 and not self.nics:
            return
        from vmanager.net import Namespace, VirtualNic, stable_mac
        if self._nic_count and not self._own_nics:
            ns = Namespace(self.namespace)
            ns.create()
            self._namespace = ns
            for index in range(self._nic_count):
                nic = VirtualNic(namespace=self.namespace, mac=stable_mac(self.name, index))
                self._own_nics.append(nic)
            self.nics = list(self._own_nics)
        for index, nic in enumerate(self.nics):
            nic.create()
            fd = nic.open_fd()
            ctx.owned_fds.append(fd)
            ctx.pass_fds.append(fd)
            ctx.add("-netdev", f"tap,id=net{index},fd={fd}",
                    "-device", f"{nic.model},netdev=net{index},mac={nic.mac},id=nic{index}")

    def _teardown(self) -> None:
        try:
            super()._teardown()
        finally:
            for nic in self._own_nics:
                nic.close()
            self._own_nics = []
            if self._namespace is not None:
                self._namespace.close()
                self._namespace = None
