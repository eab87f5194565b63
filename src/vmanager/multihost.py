"""Several servers simulated on one machine, for tests and the multi-server demo.

Each server is a network namespace with its own ``sshd`` (Debian's
openssh-server), its own vmanager state and run directories (``SetEnv`` in
its sshd_config) and its own ``/run/netns`` (sshd runs in a private mount
namespace with a tmpfs there, so two servers can both have a namespace named
after the same machine, as real servers can) and its own local storage: the
directory :attr:`Simulation.storage` is, on each server, a bind mount of that
server's own directory (``SimServer.storage``), so a disk path in a lab file
names a different file on each server, as on servers that share no storage.
The servers sit on an underlay:
a bridge on this host with one veth per server, in a /24 picked at random from
100.64.0.0/10 whose ``.254`` is this host's address. Keys are generated per
simulation; the client's ``known_hosts`` lists exactly the servers' host keys.
Nothing listens outside the namespaces made here.

>>> with Simulation(2, base_dir=Path("/tmp/sim")) as sim:    # doctest: +SKIP
...     print(sim.servers_toml(vmanager="vmanager"))
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import os
import secrets
import shlex
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Self

from vmanager.errors import HostError
from vmanager.net import Interface, Namespace, Switch, routes
from vmanager.net.host import sys_command
from vmanager.net.veth import Veth

log = logging.getLogger(__name__)

SSHD = "/usr/sbin/sshd"
UNDERLAY_MTU = 1550  # VXLAN's 50 bytes on top of a 1500-byte inner MTU

# Runs as the sshd's parent: private mounts, a tmpfs on /run/netns, the server's
# own storage bound on the common storage path, the server's network namespace,
# then exec. ctypes: os.unshare/os.setns need Python 3.12.
_LAUNCHER = """
import ctypes, os, sys
libc = ctypes.CDLL(None, use_errno=True)
def check(rc, what):
    if rc != 0:
        err = ctypes.get_errno(); sys.exit(f"{what}: {os.strerror(err)}")
fd = os.open(sys.argv[1], os.O_RDONLY)
check(libc.unshare(0x20000), "unshare(CLONE_NEWNS)")
check(libc.mount(b"none", b"/", None, 0x4000 | (1 << 18), None), "make / private")
os.makedirs("/run/netns", exist_ok=True)
check(libc.mount(b"tmpfs", b"/run/netns", b"tmpfs", 0, b"mode=0755"), "tmpfs /run/netns")
check(libc.mount(os.fsencode(sys.argv[2]), os.fsencode(sys.argv[3]), None, 0x1000, None),
      "bind the server's storage")
check(libc.setns(fd, 0x40000000), "setns")
os.close(fd)
os.execv(sys.argv[4], sys.argv[4:])
"""


@dataclass
class SimServer:
    """One simulated server."""

    name: str
    netns: str
    address: str
    dir: Path
    state_dir: Path
    run_dir: Path
    process: subprocess.Popen[bytes] | None = None

    @property
    def storage(self) -> Path:
        """This server's local storage, seen by it at :attr:`Simulation.storage`."""
        return self.dir / "storage"

    def processes(self) -> list[int]:
        """Every process whose network namespace is this server's (sshd included)."""
        try:
            target = os.stat(f"/run/netns/{self.netns}").st_ino
        except FileNotFoundError:
            return []
        found = []
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                with contextlib.suppress(OSError):
                    if os.stat(f"/proc/{entry}/ns/net").st_ino == target:
                        found.append(int(entry))
        return found


class Simulation:
    """``count`` servers (``s1``, ``s2``...) on an underlay bridge, each with an sshd."""

    def __init__(self, count: int = 2, *, base_dir: Path, cache_dir: str | None = None,
                 underlay_mtu: int = UNDERLAY_MTU) -> None:
        self.count = count
        self.base = Path(base_dir)
        self.tag = secrets.token_hex(2)
        self.underlay = f"mu{self.tag}"
        self.underlay_mtu = underlay_mtu
        self.cache_dir = cache_dir or os.environ.get("VMANAGER_CACHE_DIR")
        self.subnet = self._free_subnet()
        self.servers: list[SimServer] = []
        self._stack = contextlib.ExitStack()

    @staticmethod
    def _free_subnet() -> ipaddress.IPv4Network:
        taken = [r.destination for r in routes() if r.destination is not None]
        for _ in range(64):
            net = ipaddress.IPv4Network(f"100.{64 + secrets.randbelow(64)}."
                                        f"{secrets.randbelow(256)}.0/24")
            if not any(isinstance(t, ipaddress.IPv4Network) and t.overlaps(net)
                       and t.prefixlen > 0 for t in taken):
                return net
        raise HostError("no free /24 in 100.64.0.0/10 for the simulated underlay")

    @property
    def host_address(self) -> str:
        """This host's address on the underlay."""
        return str(self.subnet.network_address + 254)

    @property
    def known_hosts(self) -> Path:
        """The servers' host keys, as ssh's ``UserKnownHostsFile``."""
        return self.base / "known_hosts"

    @property
    def storage(self) -> Path:
        """A path that is each server's own local storage (not shared between them)."""
        return self.base / "storage"

    @property
    def identity(self) -> Path:
        """The client key every server accepts."""
        return self.base / "client_key"

    def __enter__(self) -> Self:
        try:
            self._build()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def _build(self) -> None:
        self.base.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(self.base, 0o700)
        _keygen(self.identity)
        self.storage.mkdir(mode=0o700, exist_ok=True)
        bridge = self._stack.enter_context(Switch(self.underlay))
        Interface(bridge.name).add_address(f"{self.host_address}/24")
        with contextlib.suppress(OSError):  # sshd's privilege separation directory
            os.makedirs("/run/sshd", mode=0o755, exist_ok=True)
        known = []
        for i in range(1, self.count + 1):
            name = f"s{i}"
            ns = self._stack.enter_context(Namespace(f"{self.underlay}{name}"))
            address = str(self.subnet.network_address + i)
            self._stack.enter_context(Veth(f"{self.underlay}{i}", netns=ns.name,
                                           bridge=bridge.name, address=f"{address}/24",
                                           mtu=self.underlay_mtu))
            d = self.base / name
            server = SimServer(name, ns.name, address, d, d / "state", d / "run")
            for p in (d, server.state_dir, server.run_dir, server.storage):
                p.mkdir(mode=0o700, exist_ok=True)
            _keygen(d / "host_key")
            host_key = (d / "host_key.pub").read_text().split()
            known.append(f"{address} {host_key[0]} {host_key[1]}")
            (d / "authorized_keys").write_text(Path(f"{self.identity}.pub").read_text())
            (d / "sshd_config").write_text(self._sshd_config(server))
            self.servers.append(server)
            self._stack.callback(self._stop, server)
            self._start(server)
        self.known_hosts.write_text("\n".join(known) + "\n")
        for server in self.servers:
            self._wait_listening(server)

    def _sshd_config(self, s: SimServer) -> str:
        env = [f"VMANAGER_STATE_DIR={s.state_dir}", f"VMANAGER_RUN_DIR={s.run_dir}"]
        if self.cache_dir:
            env.append(f"VMANAGER_CACHE_DIR={self.cache_dir}")
        return "\n".join([
            f"ListenAddress {s.address}", "Port 22", f"HostKey {s.dir / 'host_key'}",
            f"AuthorizedKeysFile {s.dir / 'authorized_keys'}",
            "PermitRootLogin prohibit-password", "PasswordAuthentication no",
            "KbdInteractiveAuthentication no", "UsePAM no", "PidFile none",
            "AllowTcpForwarding no", "AllowStreamLocalForwarding yes",
            "StreamLocalBindUnlink yes", "X11Forwarding no", "PrintMotd no",
            # the keys sit in a 0700 directory under /tmp (sticky, 1777), which
            # StrictModes would refuse as a parent
            "StrictModes no",
            f"SetEnv {' '.join(shlex.quote(e) for e in env)}", ""])

    def _start(self, s: SimServer) -> None:
        log_file = open(s.dir / "sshd.log", "ab")  # noqa: SIM115 - handed to the child
        try:
            s.process = subprocess.Popen(
                [sys.executable, "-c", _LAUNCHER, f"/run/netns/{s.netns}", str(s.storage),
                 str(self.storage), SSHD, "-D", "-e",
                 "-f", str(s.dir / "sshd_config")], stdin=subprocess.DEVNULL,
                stdout=log_file, stderr=subprocess.STDOUT)
        finally:
            log_file.close()

    def _wait_listening(self, s: SimServer, timeout: float = 15.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if s.process is not None and s.process.poll() is not None:
                break
            with contextlib.suppress(OSError), socket.create_connection((s.address, 22), 1):
                return
            time.sleep(0.05)
        log_text = (s.dir / "sshd.log").read_text(errors="replace")[-2000:]
        raise HostError(f"simulated server {s.name}: sshd did not start:\n{log_text}")

    def _stop(self, s: SimServer) -> None:
        proc = s.process
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)

    def servers_toml(self, *, vmanager: str) -> str:
        """``[servers.sN]`` tables for a lab file using these servers."""
        out = []
        for s in self.servers:
            out += [f"[servers.{s.name}]", f'ssh = "root@{s.address}"',
                    f'identity = "{self.identity}"', f'known_hosts = "{self.known_hosts}"',
                    f"vmanager = {_toml_str(vmanager)}", 'underlay = "eth0"', ""]
        return "\n".join(out)

    def leftovers(self) -> dict[str, list[str]]:
        """Processes other than sshd still in each server's namespace (pid: argv)."""
        out = {}
        for s in self.servers:
            sshd = {s.process.pid} if s.process and s.process.poll() is None else set()
            rest = [p for p in s.processes() if p not in sshd and not _is_sshd(p)]
            if rest:  # a session may still be closing: look again once
                time.sleep(0.5)
                rest = [p for p in s.processes() if p not in sshd and not _is_sshd(p)]
            if rest:
                out[s.name] = [f"{p}: {_argv(p)}" for p in rest]
        return out

    def close(self) -> None:
        """Stop every sshd, remove the namespaces, veths and the underlay bridge."""
        self._stack.close()


def _is_sshd(pid: int) -> bool:
    """sshd or one of its session processes (``sshd: root@notty``), or a zombie."""
    try:
        argv0 = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0]
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True  # gone meanwhile
    return state == "Z" or argv0.endswith(b"sshd") or argv0.startswith(b"sshd:")


def _argv(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()[:200]
    except OSError:
        return "?"


def _toml_str(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _keygen(path: Path) -> None:
    if path.exists():
        return
    sys_command(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "vmanager-sim",
                 "-f", str(path)], timeout=30)
