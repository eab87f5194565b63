"""VirtualNic: a veth pair ``port <-> sink`` whose sink end feeds a QEMU NIC.

Layout (``name`` = ``vn1a2b3c4d`` for example)::

    host namespace              |  machine namespace (``namespace=``)
                                |
    [Switch] -- port "NAME" ====veth==== sink "NAMEs" -- macvtap "NAMEt" -> /dev/tapN -> QEMU
                                |
    tap mode:                   |  sink "NAMEs" --[bridge "NAMEb"]-- tap "NAMEt" -> QEMU

*macvtap* (default) runs in **passthru** mode: the macvtap owns the sink
outright, the sink is put in promiscuous mode and every frame goes to the
guest, so the guest may change its MAC address or bridge other MACs itself
(bridge mode would drop frames not addressed to the macvtap's own MAC). Its
character device is made with ``mknod`` from the ``dev`` numbers the kernel
publishes in sysfs, read *inside* the machine namespace, in a vmanager-owned
directory (mode 0700) instead of ``/dev``.

*tap* mode is for hosts or guests where macvtap does not fit: a persistent tap
created inside the namespace and bridged to the sink by a small bridge.

Without ``namespace`` everything lives in the host namespace.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import stat
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pyroute2.netlink.exceptions import NetlinkError

from vmanager import paths, validate
from vmanager.errors import ConfigError, HostError, NetworkError
from vmanager.net._netlink import (
    add_link,
    check_netns_name,
    delete_link,
    kernel_call,
    netns_path,
    require,
    require_absent,
    rtnl,
    rtnl_and_sysfs,
)
from vmanager.net._nsexec import TAP_FLAGS, read_file, tun_open, tun_open_here
from vmanager.net._nsthread import read_at
from vmanager.net._resource import Resource, UndoStack
from vmanager.net.addresses import random_mac, validate_mtu
from vmanager.qemu import cmdline

if TYPE_CHECKING:
    from vmanager.net.capture import Capture
    from vmanager.net.impair import Impairment
    from vmanager.net.namespace import Namespace

log = logging.getLogger(__name__)

NicMode = Literal["macvtap", "tap"]
MODES: tuple[str, ...] = ("macvtap", "tap")
#: ``port`` is NAME, ``sink`` NAME+"s", the device NAME+"t", the tap bridge NAME+"b".
NAME_MAX = validate.IFNAME_MAX - 1


def _device_dir() -> Path:
    """Where macvtap device nodes go: ``run_dir()/net`` unless mounted ``nodev``.

    Device nodes on a ``nodev`` file system (a tmpfs ``/run`` often is) cannot be
    opened, so then a private ``/dev/vmanager`` is used instead.
    """
    preferred = paths.private_dir(paths.run_dir() / "net")
    if not os.statvfs(preferred).f_flag & os.ST_NODEV:
        return preferred
    fallback = paths.private_dir(Path("/dev/vmanager"))
    log.debug("%s is mounted nodev; device nodes go to %s", preferred, fallback)
    return fallback


class VirtualNic(Resource):
    """A virtual NIC for a machine: host ``port`` <-> ``sink`` (+ macvtap or tap).

    Constructing it creates the veth pair and its macvtap or tap (the seed's
    "Creates a virtual VETH interface"); :meth:`close` (idempotent) or leaving
    ``with`` removes them. ``create=False`` only describes it, for
    :meth:`create`, ``with`` or a :class:`~vmanager.Machine` to make later.

    ``port`` stays in the host namespace, to be connected to a Switch or Router;
    ``open_fd()`` gives QEMU its end. Names: ``name`` (default ``vn`` + part of the
    MAC) is the port, at most 14 bytes since ``s``/``t``/``b`` are appended for
    the other ends. ``mac`` defaults to a random one; machines pass
    :func:`stable_mac`.

    >>> with Namespace("vm1") as ns, VirtualNic(namespace="vm1",
    ...                                         mac=stable_mac("vm1", 0)) as nic:
    ...     fd = nic.open_fd()     # doctest: +SKIP

    Raises:
        ConfigError: bad name, MAC, mode or model; a name that exists.
        NotFoundError: the namespace does not exist.
        LinkError / HostError: the kernel refused.
    """

    _kind = "virtual NIC"

    def __init__(self, name: str | None = None, *, namespace: str | Namespace | None = None,
                 mac: str | None = None, mode: NicMode = "macvtap",
                 model: str = "virtio-net-pci", mtu: int | None = None,
                 create: bool = True) -> None:
        super().__init__()
        #: MTU of every link of this NIC (port, sink, macvtap/tap, tap bridge) and,
        #: for virtio-net, the guest's (``host_mtu``); ``None``: the kernel's 1500
        self.mtu = validate_mtu(mtu) if mtu is not None else None
        self.mac = validate.mac(mac) if mac is not None else random_mac()
        if name is None:
            name = "vn" + self.mac.replace(":", "")[4:]
        self.name = validate.ifname(name, what="VirtualNic name")
        if len(self.name.encode()) > NAME_MAX:
            raise ConfigError(f"VirtualNic name {name!r} is too long: at most {NAME_MAX} "
                              "bytes, since the sink and device names append one letter")
        if mode not in MODES:
            raise ConfigError(f"VirtualNic mode must be one of {MODES}, got {mode!r}")
        self.mode: NicMode = mode
        if not isinstance(model, str) or not model.replace("-", "").replace("_", "").isalnum():
            raise ConfigError(f"NIC model {model!r} is not a QEMU device name")
        self.model = model
        ns_name = getattr(namespace, "name", namespace)
        self.namespace: str | None = (check_netns_name(ns_name) if ns_name is not None
                                      else None)
        self.device_node: Path | None = None
        self._init_done(create)

    def __repr__(self) -> str:
        return (f"VirtualNic({self.name!r}, namespace={self.namespace!r}, mac={self.mac!r}, "
                f"mode={self.mode!r})")

    def _label(self) -> str:
        return f"virtual NIC {self.name!r}"

    @property
    def port(self) -> str:
        """The host-side end of the veth pair: plug this into a Switch."""
        return self.name

    @property
    def ifname(self) -> str:
        """Same as :attr:`port` (what a Switch or Bond enslaves)."""
        return self.name

    @property
    def sink(self) -> str:
        """The machine-side end of the veth pair (in :attr:`namespace`)."""
        return self.name + "s"

    @property
    def device(self) -> str:
        """The macvtap or tap interface QEMU's descriptor is attached to."""
        return self.name + "t"

    @property
    def tap_bridge(self) -> str | None:
        """In tap mode, the bridge joining sink and tap; ``None`` for macvtap."""
        return self.name + "b" if self.mode == "tap" else None

    def _build(self, undo: UndoStack) -> None:
        ns = self.namespace
        sysfs: int | None = None
        with contextlib.ExitStack() as stack:
            host = stack.enter_context(rtnl())
            if ns is None:
                ipr = host
            elif self.mode == "macvtap":
                # one helper thread makes the namespace's socket and sysfs
                ipr, sysfs = stack.enter_context(rtnl_and_sysfs(ns))
            else:
                ipr = stack.enter_context(rtnl(ns))
            if self.mode == "tap":
                # TUNSETIFF would silently attach to an existing tap: check first
                require_absent(host, self.port, None)
                for name in (self.sink, self.device, self.name + "b"):
                    require_absent(ipr, name, ns)
            sink = self._add_veth(host, ipr, undo)
            with kernel_call("set up", self.sink, ns):
                ipr.link("set", index=sink, state="up",
                         **({"mtu": self.mtu} if self.mtu else {}))
            if self.mode == "macvtap":
                self._add_macvtap(ipr, sink)
                self._make_device_node(undo, sysfs)
            else:
                self._add_tap(ipr, undo)
                with kernel_call("set up", self.device, ns):
                    ipr.link("set", index=require(ipr, self.device, ns), state="up")
        log.info("created %r", self)

    def _name_taken(self, host: Any, ipr: Any, names: tuple[str, ...]) -> None:
        """After EEXIST: the :class:`ConfigError` naming what exists already."""
        if self.port in names:
            require_absent(host, self.port, None)
        for name in names:
            if name != self.port:
                require_absent(ipr, name, self.namespace)

    def _add_veth(self, host: Any, ipr: Any, undo: UndoStack) -> int:
        """Add the veth pair (the port up) and return the sink's ifindex."""
        peer: dict[str, object] = {"ifname": self.sink}
        nsfd = os.open(netns_path(self.namespace), os.O_RDONLY) if self.namespace else None
        try:
            if nsfd is not None:
                peer["net_ns_fd"] = nsfd
            try:
                # the port comes up with the veth; the sink is brought up in its namespace
                made = add_link(host, ifname=self.port, kind="veth", peer=peer, state="up",
                                **({"mtu": self.mtu} if self.mtu else {}))
            except NetlinkError as exc:
                if exc.code == errno.EEXIST:
                    self._name_taken(host, ipr, (self.port, self.sink))
                with kernel_call("add veth", self.port, None):
                    raise
        finally:
            if nsfd is not None:
                os.close(nsfd)
        # Deleting one end of a veth deletes both, and with the sink its macvtap, in
        # one request: each delete waits ~20 ms for the kernel (RCU), so one, not two.
        undo.push(f"delete veth {self.port}", lambda: delete_link(self.port, None))
        # the kernel's echo names the peer (IFLA_LINK) and saves a lookup
        sink = made.get_attr("IFLA_LINK") if made is not None else None
        return int(sink) if sink else require(ipr, self.sink, self.namespace)

    def _add_macvtap(self, ipr: Any, sink: int) -> None:
        """Add the macvtap on ``sink``, up. The veth's undo step removes it too."""
        try:
            ipr.link("add", ifname=self.device, kind="macvtap", link=sink,
                     macvtap_mode="passthru", address=self.mac, state="up",
                     **({"mtu": self.mtu} if self.mtu else {}))
        except NetlinkError as exc:
            if exc.code == errno.EEXIST:
                self._name_taken(ipr, ipr, (self.device,))
            with kernel_call("add macvtap", self.device, self.namespace):
                raise

    def _add_tap(self, ipr: Any, undo: UndoStack) -> None:
        ns = self.namespace
        if ns is None:
            fd = tun_open_here(self.device, TAP_FLAGS, persist=True)
        else:
            fd = tun_open(ns, self.device, TAP_FLAGS, persist=True)
        os.close(fd)
        undo.push(f"delete tap {self.device}", lambda: delete_link(self.device, ns))
        bridge = self.name + "b"
        with kernel_call("add bridge", bridge, ns):
            ipr.link("add", ifname=bridge, kind="bridge", br_stp_state=0,
                     br_forward_delay=0, br_ageing_time=0,
                     **({"mtu": self.mtu} if self.mtu else {}))
        undo.push(f"delete bridge {bridge}", lambda: delete_link(bridge, ns))
        index = require(ipr, bridge, ns)
        if self.mtu:
            with kernel_call("set mtu", self.device, ns):
                ipr.link("set", index=require(ipr, self.device, ns), mtu=self.mtu)
        for member in (self.sink, self.device):
            with kernel_call(f"connect to {bridge}", member, ns):
                ipr.link("set", index=require(ipr, member, ns), master=index)
        with kernel_call("set up", bridge, ns):
            ipr.link("set", index=index, state="up")

    def _read_dev_numbers(self, sysfs: int | None) -> tuple[int, int]:
        """The macvtap's ``dev`` numbers, from sysfs as the NIC's namespace shows it.

        A macvtap's minor is assigned where it lives, so it is read there:
        ``class/net/NAMEt/macvtap/`` holds one entry, ``tap<ifindex>``, whose
        ``dev`` says ``major:minor``. ``sysfs`` is that namespace's sysfs (a
        directory descriptor, made with the namespace's socket); without it,
        the host's ``/sys`` is read for a NIC in the host namespace and a helper
        process reads it for one elsewhere (kernels without ``fsopen``).
        """
        base = f"class/net/{self.device}/macvtap"

        def read(sysfs: int) -> str:
            where = os.open(base, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC, dir_fd=sysfs)
            try:
                entries = [e for e in os.listdir(where) if e.startswith("tap")]
                if len(entries) != 1:
                    raise ValueError(f"expected one tap<ifindex> entry, found {entries}")
                return read_at(where, f"{entries[0]}/dev").decode()
            finally:
                os.close(where)

        try:
            if sysfs is not None:
                text = read(sysfs)
            elif self.namespace is None:
                host_sysfs = os.open("/sys", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
                try:
                    text = read(host_sysfs)
                finally:
                    os.close(host_sysfs)
            else:
                text = self._read_dev_numbers_by_process()
            major, minor = (int(part) for part in text.strip().split(":"))
        except (OSError, ValueError) as exc:
            raise HostError(f"cannot read the device numbers of macvtap {self.device!r} "
                            f"from /sys/{base}/tap*/dev: {exc}") from exc
        return major, minor

    def _read_dev_numbers_by_process(self) -> str:
        assert self.namespace is not None
        with rtnl(self.namespace) as ipr:
            ifindex = require(ipr, self.device, self.namespace)
        path = f"/sys/class/net/{self.device}/macvtap/tap{ifindex}/dev"
        return read_file(self.namespace, path, sysfs=True).decode()

    def _make_device_node(self, undo: UndoStack, sysfs: int | None) -> None:
        major, minor = self._read_dev_numbers(sysfs)
        node = _device_dir() / f"{self.namespace or '-host'}.{self.device}"
        try:
            node.unlink(missing_ok=True)  # a stale node from a crashed run
            os.mknod(node, 0o600 | stat.S_IFCHR, os.makedev(major, minor))
        except OSError as exc:
            raise HostError(f"cannot create device node {node} for macvtap "
                            f"{self.device!r}: {exc.strerror}") from exc
        self.device_node = node
        undo.push(f"remove {node}", lambda: node.unlink(missing_ok=True))
        log.debug("macvtap %s is %s (%d:%d)", self.device, node, major, minor)

    def open_fd(self) -> int:
        """Open a new descriptor on the NIC's macvtap or tap for QEMU's ``-netdev tap,fd=``.

        The caller owns the descriptor (close it, or hand it to QEMU with
        ``pass_fds``). It is opened non-inheritable, with ``IFF_VNET_HDR`` set
        (QEMU detects that): frames read or written carry a 10-byte virtio-net
        header. A tap-mode NIC accepts one descriptor at a time.

        Raises:
            StateError: the NIC is not created.
            HostError: the device could not be opened.
        """
        self._require_created("open a descriptor on")
        if self.mode == "macvtap":
            assert self.device_node is not None
            try:
                return os.open(self.device_node, os.O_RDWR | os.O_CLOEXEC)
            except OSError as exc:
                raise HostError(f"cannot open {self.device_node} (macvtap {self.device!r}): "
                                f"{exc.strerror}") from exc
        try:
            if self.namespace is None:
                return tun_open_here(self.device, TAP_FLAGS)
            return tun_open(self.namespace, self.device, TAP_FLAGS)
        except (OSError, NetworkError) as exc:
            raise HostError(f"cannot attach to tap {self.device!r}: {exc}") from exc

    def impair(self, *, delay: object = None, jitter: object = None, loss: object = None,
               rate: object = None, corrupt: object = None, duplicate: object = None,
               reorder: object = None) -> Impairment:
        """Impair what the machine sends through this NIC (netem on the sink's egress).

        Replaces any earlier impairment; values as ``tc`` takes them
        (``delay="40ms", loss="1%", rate="10mbit"``, see :mod:`vmanager.net.impair`).
        Frames towards the machine are untouched: impair the far end too for a
        symmetrical link. Returns what the kernel now applies.

        Raises:
            ConfigError: a value out of range (naming the field).
            HostError: the kernel has no ``sch_netem``.
        """
        from vmanager.net import impair as _impair
        wanted = _impair.impairment(delay=delay, jitter=jitter, loss=loss, rate=rate,
                                    corrupt=corrupt, duplicate=duplicate, reorder=reorder)
        self._require_created("impair")
        _impair.apply(self.sink, self.namespace, wanted)
        return _impair.read(self.sink, self.namespace)

    @property
    def impairment(self) -> Impairment:
        """The impairment the kernel applies now (empty, and falsy, when none)."""
        from vmanager.net import impair as _impair
        self._require_created("read the impairment of")
        return _impair.read(self.sink, self.namespace)

    def clear_impairment(self) -> None:
        """Remove the impairment; a NIC without one is left as it is."""
        from vmanager.net import impair as _impair
        self._require_created("clear the impairment of")
        _impair.clear(self.sink, self.namespace)

    def capture(self, path: str | os.PathLike[str], *, count: int | None = None,
                duration: float | None = None, filter: str | None = None) -> Capture:
        """Capture this NIC's frames, both ways, into a pcap file (a context manager).

        ``with nic.capture("a.pcap"):`` records until the block ends (or after
        ``count`` frames, or ``duration`` seconds; ``filter`` is a tcpdump
        expression); see :mod:`vmanager.net.capture`.
        """
        from vmanager.net.capture import Capture
        self._require_created("capture on")
        return Capture(self.sink, netns=self.namespace, path=path, count=count,
                       duration=duration, filter=filter)

    def qemu_args(self, fd: int, *, index: int) -> list[str]:
        """``-netdev``/``-device`` arguments for QEMU using descriptor ``fd``."""
        return cmdline.nic_args([cmdline.NicSpec(index, fd, self.model, self.mac, mtu=self.mtu)])

