"""A router's dnsmasq: its argv, its start inside the router's namespace, its stop.

dnsmasq serves DHCP and DNS on the router's LAN side. It runs in the router's
namespace, drops root after binding (to its own user, else ``nobody``), keeps
its pid, lease and log files in the router's private run directory, and logs
no routine DHCP traffic (a guest can ask for leases without end). What it
still logs goes through a pipe to a log keeper (:mod:`vmanager.logkeeper`):
``dnsmasq.log`` is rotated at :data:`LOG_LIMIT` with one previous file,
also after the process that started the router exited.
"""

from __future__ import annotations

import grp
import ipaddress
import logging
import pwd
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from vmanager.errors import HostError
from vmanager.logkeeper import LogKeeper
from vmanager.net._nsexec import popen

log = logging.getLogger(__name__)

#: dnsmasq's log file in the router's run directory, and its rotation size.
LOG = "dnsmasq.log"
LOG_LIMIT = 1 << 20


def argv(*, rundir: Path, lan_if: str, subnet: ipaddress.IPv4Network,
         address: ipaddress.IPv4Interface, domain: str, dns: bool,
         upstream_dns: Sequence[object], dhcp: bool,
         dhcp_hosts: Mapping[str, object]) -> list[str]:
    """dnsmasq's argv for a LAN ``subnet`` served from ``address`` on ``lan_if``."""
    hosts = list(subnet.hosts())
    first, last = hosts[len(hosts) // 2], hosts[-1]
    args = ["dnsmasq", "--keep-in-foreground", "--conf-file=/dev/null",
            f"--pid-file={rundir / 'dnsmasq.pid'}", "--log-facility=-",
            f"--interface={lan_if}", "--bind-interfaces", "--no-hosts", "--no-resolv",
            f"--domain={domain}", f"--local=/{domain}/",
            *unprivileged_user(),
            # a guest can ask for leases without end: log no routine DHCP traffic
            "--quiet-dhcp", "--quiet-dhcp6", "--quiet-ra"]
    if dns:
        args += [f"--host-record=router.{domain},{address.ip}",
                 *(f"--server={s}" for s in upstream_dns)]
    else:
        args += ["--port=0"]
    if dhcp:
        args += [f"--dhcp-range={first},{last},{subnet.netmask},1h",
                 f"--dhcp-leasefile={rundir / 'leases'}", "--dhcp-authoritative",
                 # The LAN is ours alone: probing each address with a ping before
                 # offering it only costs seconds per client.
                 "--no-ping",
                 f"--dhcp-option=option:router,{address.ip}",
                 *(f"--dhcp-host={mac},{ip}" for mac, ip in dhcp_hosts.items())]
        if not dns:
            args += ["--dhcp-option=option:dns-server"]
    return args


def spawn(args: list[str], *, rundir: Path, netns: str,
          router: str) -> tuple[subprocess.Popen[bytes], LogKeeper]:
    """Start dnsmasq in ``netns``, its output kept in ``rundir/dnsmasq.log`` (bounded)."""
    keeper = LogKeeper(rundir, LOG, limit=LOG_LIMIT)
    try:
        proc = popen(args, netns=netns, stdin=subprocess.DEVNULL,
                     stdout=keeper.fd, stderr=subprocess.STDOUT)
    except OSError as exc:
        keeper.wait()
        raise HostError(f"cannot start dnsmasq for router {router!r}: {exc}") from exc
    except BaseException:
        keeper.wait()
        raise
    keeper.close_writer()  # dnsmasq has its copy
    return proc, keeper


def wait_started(proc: subprocess.Popen[bytes], *, rundir: Path, router: str,
                 timeout: float, keeper: LogKeeper | None = None) -> None:
    """Wait until dnsmasq wrote its pid file (it has bound its sockets by then).

    Raises:
        HostError: it exited or did not start in time (with the tail of its log).
    """
    pidfile = rundir / "dnsmasq.pid"
    deadline = time.monotonic() + timeout
    while not (pidfile.exists() and pidfile.read_text().strip()):
        if proc.poll() is not None or time.monotonic() > deadline:
            if proc.returncode is not None and keeper is not None:
                keeper.wait()  # everything dnsmasq said is in the log
            tail = _tail(rundir / LOG)
            what = (f"exited with status {proc.returncode}" if proc.returncode is not None
                    else f"did not start within {timeout} s")
            raise HostError(f"dnsmasq for router {router!r} {what}:\n{tail}")
        time.sleep(0.02)
    log.info("router %s: dnsmasq running as pid %d", router, proc.pid)


def _tail(path: Path) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(max(0, f.seek(0, 2) - 2000))
            return f.read().decode(errors="replace")
    except OSError:
        return ""


def stop(proc: subprocess.Popen[bytes], *, router: str, timeout: float,
         keeper: LogKeeper | None = None) -> None:
    """SIGTERM, then SIGKILL after ``timeout``; always reaped (its log keeper too)."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=timeout)
    if keeper is not None:
        keeper.wait()
    log.info("router %s: dnsmasq stopped", router)


def remove_tree(path: Path) -> None:
    """Remove the router's run directory (flat: pid, lease and log files)."""
    if not path.exists():
        return
    for child in path.iterdir():
        child.unlink()
    path.rmdir()


def unprivileged_user() -> list[str]:
    """dnsmasq drops root after binding: to its own user if there is one, else nobody.

    It opens its pid and lease files (in the router's 0700 run directory) first.
    """
    for user in ("dnsmasq", "nobody"):
        try:
            entry = pwd.getpwnam(user)
        except KeyError:
            continue
        return [f"--user={user}", f"--group={grp.getgrgid(entry.pw_gid).gr_name}"]
    raise HostError("dnsmasq needs an unprivileged user to run as: neither 'dnsmasq' nor "
                    "'nobody' exists on this host")
