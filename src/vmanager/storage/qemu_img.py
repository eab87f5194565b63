"""A thin runner for ``qemu-img`` and the frozen results it returns.

Every call is an argv list (no shell), has a timeout, and reads machine output
through ``--output=json`` where ``qemu-img`` offers it. Nothing here decides
policy (which backing files are acceptable, which image may be written): that
is :mod:`vmanager.storage.chain` and :class:`~vmanager.storage.Harddrive`.

QEMU 7.2's ``qemu-img snapshot -l`` has no ``--output=json``; snapshots are read
from ``qemu-img info --output=json`` instead, whose ``snapshots`` list has the
same QAPI shape (``SnapshotInfo``) that QMP's ``query-block`` returns, so
:meth:`SnapshotInfo.from_json` and :meth:`ImageInfo.from_json` also parse what a
running machine reports.

Errors::

    QemuImgError(StorageError, CommandError)   qemu-img failed or timed out (argv, stderr)
    HostError                                  qemu-img is not installed
"""

from __future__ import annotations

import json
import logging
import os
import resource
import shutil
import subprocess
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from vmanager import hostcmd
from vmanager.errors import CommandError, HostError, StorageError

log = logging.getLogger(__name__)

#: The binary; tests or unusual hosts may point this elsewhere.
QEMU_IMG = "qemu-img"
#: Timeout for commands that write (create, resize, snapshot), in seconds.
DEFAULT_TIMEOUT = 120.0
#: Timeout for ``qemu-img info`` on an image that may be hostile.
PROBE_TIMEOUT = 30.0

StrPath = str | os.PathLike[str]


class QemuImgError(StorageError, CommandError):
    """``qemu-img`` exited non-zero, timed out, or printed something unparsable.

    It is both a :class:`StorageError` (the image is the problem) and a
    :class:`CommandError` (``argv``, ``returncode``, ``stderr`` are attached).
    ``returncode`` is ``None`` after a timeout.
    """


@dataclass(frozen=True)
class Limits:
    """Resource limits applied to a ``qemu-img`` child before it runs.

    ``address_space`` bounds memory (``RLIMIT_AS``), ``cpu_seconds`` CPU time
    (``RLIMIT_CPU``), ``file_size`` the size of any file it may write
    (``RLIMIT_FSIZE``; 0 for probes, which never write).
    """

    address_space: int | None = 1 << 30
    cpu_seconds: int | None = 30
    file_size: int | None = None

    def preexec(self) -> Callable[[], None]:
        """A ``preexec_fn`` that installs these limits in the child."""
        pairs = [(resource.RLIMIT_AS, self.address_space),
                 (resource.RLIMIT_CPU, self.cpu_seconds),
                 (resource.RLIMIT_FSIZE, self.file_size)]
        wanted = [(which, value) for which, value in pairs if value is not None]

        def apply() -> None:
            for which, value in wanted:
                resource.setrlimit(which, (value, value))
        return apply


#: Limits for probing images that may be hostile: a GiB of memory, no file writes.
PROBE_LIMITS = Limits(address_space=1 << 30, cpu_seconds=int(PROBE_TIMEOUT), file_size=0)


@dataclass(frozen=True)
class SnapshotInfo:
    """One internal snapshot of a qcow2 image (QAPI ``SnapshotInfo``).

    ``vm_state_size`` is 0 for a disk-only snapshot and the saved RAM/device
    state size for a whole-machine one (QMP ``snapshot-save``).
    """

    id: str
    name: str
    vm_state_size: int
    date: datetime
    vm_clock: timedelta
    icount: int | None = None

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> SnapshotInfo:
        """Build from a ``qemu-img info --output=json`` or QMP snapshot entry.

        Raises :class:`StorageError` if a required key is missing or mistyped.
        """
        try:
            date = datetime.fromtimestamp(
                int(data["date-sec"]) + int(data.get("date-nsec", 0)) / 1e9, tz=UTC)
            clock = timedelta(seconds=int(data.get("vm-clock-sec", 0)),
                              microseconds=int(data.get("vm-clock-nsec", 0)) / 1000)
            icount = data.get("icount")
            return cls(id=str(data["id"]), name=str(data["name"]),
                       vm_state_size=int(data.get("vm-state-size", 0)), date=date,
                       vm_clock=clock, icount=int(icount) if icount is not None else None)
        except (KeyError, TypeError, ValueError) as exc:
            raise StorageError(f"unexpected snapshot entry from qemu-img: {data!r}") from exc


@dataclass(frozen=True)
class ImageInfo:
    """What ``qemu-img info --output=json`` (QAPI ``ImageInfo``) says about one image.

    ``backing_file`` is the name as recorded in the image header (possibly
    relative to the image's directory); ``backing_chain`` holds the backing
    images, nearest first, when the caller walked the chain (see
    :func:`vmanager.storage.chain.walk`), else it is empty.
    """

    filename: str
    format: str
    virtual_size: int
    actual_size: int | None = None
    cluster_size: int | None = None
    backing_file: str | None = None
    full_backing_file: str | None = None
    backing_format: str | None = None
    dirty: bool = False
    encrypted: bool = False
    corrupt: bool | None = None
    data_file: str | None = None
    snapshots: tuple[SnapshotInfo, ...] = ()
    backing_chain: tuple[ImageInfo, ...] = field(default=(), repr=False)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ImageInfo:
        """Build from one ``qemu-img info --output=json`` object (or QMP's ``image``).

        Raises :class:`StorageError` if a required key is missing or mistyped.
        """
        try:
            specific = data.get("format-specific") or {}
            fdata = specific.get("data") or {}
            actual = data.get("actual-size")
            cluster = data.get("cluster-size")
            corrupt = fdata.get("corrupt")
            return cls(
                filename=str(data["filename"]),
                format=str(data["format"]),
                virtual_size=int(data["virtual-size"]),
                actual_size=int(actual) if actual is not None else None,
                cluster_size=int(cluster) if cluster is not None else None,
                backing_file=data.get("backing-filename"),
                full_backing_file=data.get("full-backing-filename"),
                backing_format=data.get("backing-filename-format"),
                dirty=bool(data.get("dirty-flag", False)),
                encrypted=bool(data.get("encrypted", False)),
                corrupt=bool(corrupt) if corrupt is not None else None,
                data_file=fdata.get("data-file"),
                snapshots=tuple(SnapshotInfo.from_json(s) for s in data.get("snapshots", ())),
            )
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise StorageError(f"unexpected image info from qemu-img: {data!r}") from exc

    def snapshot(self, name: str) -> SnapshotInfo | None:
        """The snapshot called ``name``, or ``None``."""
        return next((s for s in self.snapshots if s.name == name), None)


def binary() -> str:
    """The absolute path of ``qemu-img``; raises :class:`HostError` if it is not installed."""
    found = shutil.which(QEMU_IMG)
    if found is None:
        raise HostError(f"{QEMU_IMG} is not installed or not on PATH "
                        "(on Debian: apt-get install qemu-utils)")
    return found


def run(args: Sequence[str], *, timeout: float = DEFAULT_TIMEOUT,
        limits: Limits | None = None) -> subprocess.CompletedProcess[str]:
    """Run ``qemu-img *args`` and return the finished process.

    Raises :class:`HostError` if qemu-img is missing and :class:`QemuImgError`
    (with argv and stderr) if it fails or runs longer than ``timeout`` seconds.
    """
    argv = [binary(), *args]
    log.debug("running %s", argv)
    return hostcmd.run(argv, timeout=timeout, what=f"qemu-img {args[0] if args else ''}",
                       error=QemuImgError, env={**os.environ, "LC_ALL": "C"},
                       preexec_fn=limits.preexec() if limits else None)


def run_json(args: Sequence[str], *, timeout: float = DEFAULT_TIMEOUT,
             limits: Limits | None = None) -> Any:
    """Run ``qemu-img *args`` (which must include ``--output=json``) and parse stdout."""
    proc = run(args, timeout=timeout, limits=limits)
    try:
        return json.loads(proc.stdout)
    except json.JSONDecodeError as exc:
        raise QemuImgError("qemu-img printed output that is not JSON",
                           argv=[QEMU_IMG, *args], returncode=proc.returncode,
                           stdout=proc.stdout, stderr=proc.stderr) from exc


def _info_args(path: StrPath, fmt: str | None, force_share: bool, *extra: str) -> list[str]:
    args = ["info", "--output=json", *extra]
    if fmt:
        args += ["-f", fmt]
    if force_share:
        args.append("-U")
    return [*args, "--", os.fspath(path)]


def info(path: StrPath, *, fmt: str | None, force_share: bool = True,
         timeout: float = PROBE_TIMEOUT, limits: Limits | None = PROBE_LIMITS) -> ImageInfo:
    """``qemu-img info`` of one image, without opening its backing files.

    ``fmt`` should be given whenever known: probing the format of an untrusted
    image lets a raw image pretend to be qcow2. ``force_share`` (``-U``) reads an
    image that a running QEMU holds locked. Runs under ``limits``.
    """
    data = run_json(_info_args(path, fmt, force_share), timeout=timeout, limits=limits)
    if not isinstance(data, dict):
        raise StorageError(f"qemu-img info of {os.fspath(path)} did not return an object")
    return ImageInfo.from_json(data)


@dataclass(frozen=True)
class CheckResult:
    """What ``qemu-img check`` found; ``clean`` when there is nothing wrong."""

    corruptions: int
    leaks: int
    check_errors: int
    fragmented_clusters: int
    total_clusters: int

    @property
    def clean(self) -> bool:
        """No corruption, no leaked clusters, no check errors."""
        return not (self.corruptions or self.leaks or self.check_errors)


def check(path: StrPath, *, fmt: str, timeout: float = DEFAULT_TIMEOUT) -> CheckResult:
    """``qemu-img check --output=json``: consistency of an image not in use.

    qemu-img exits 2 (corruptions) or 3 (leaks) and still prints its JSON
    report; both are returned, not raised. Raises :class:`QemuImgError` when
    the check itself could not run.
    """
    argv = [binary(), "check", "--output=json", "-f", fmt, "--", os.fspath(path)]
    # 2 (corruptions) and 3 (leaks) still come with the JSON report
    proc = hostcmd.run(argv, timeout=timeout, what="qemu-img check", error=QemuImgError,
                       env={**os.environ, "LC_ALL": "C"}, ok=range(256))
    try:
        data = json.loads(proc.stdout) if proc.returncode in (0, 2, 3) else None
    except json.JSONDecodeError:
        data = None
    if not isinstance(data, dict):
        raise QemuImgError(f"qemu-img check of {os.fspath(path)} could not run "
                           f"(exit status {proc.returncode})", argv=argv,
                           returncode=proc.returncode, stdout=proc.stdout, stderr=proc.stderr)
    return CheckResult(corruptions=int(data.get("corruptions", 0)),
                       leaks=int(data.get("leaks", 0)),
                       check_errors=int(data.get("check-errors", 0)),
                       fragmented_clusters=int(data.get("fragmented-clusters", 0)),
                       total_clusters=int(data.get("total-clusters", 0)))


def info_chain(path: StrPath, *, fmt: str | None, force_share: bool = True,
               timeout: float = PROBE_TIMEOUT,
               limits: Limits | None = PROBE_LIMITS) -> list[ImageInfo]:
    """``qemu-img info --backing-chain``: the image and every backing image, top first.

    This lets qemu-img open every backing file the header names, so use it only
    on trusted images; :func:`vmanager.storage.chain.walk` checks each name first.
    """
    data = run_json(_info_args(path, fmt, force_share, "--backing-chain"), timeout=timeout,
                    limits=limits)
    if not isinstance(data, list):
        raise StorageError(f"qemu-img info --backing-chain of {os.fspath(path)} "
                           "did not return a list")
    return [ImageInfo.from_json(item) for item in data]


def create(path: StrPath, *, fmt: str, size: int | None = None, backing: str | None = None,
           backing_fmt: str | None = None, options: Mapping[str, str] | None = None,
           timeout: float = DEFAULT_TIMEOUT) -> None:
    """``qemu-img create``; with ``backing`` the backing format must be given too."""
    args = ["create", "-q", "-f", fmt]
    if backing is not None:
        if not backing_fmt:
            raise StorageError("a backing file needs an explicit backing format (-F)")
        args += ["-b", backing, "-F", backing_fmt]
    if options:
        args += ["-o", ",".join(f"{k}={_escape_opt(v)}" for k, v in options.items())]
    args += ["--", os.fspath(path)]
    if size is not None:
        args.append(str(size))
    run(args, timeout=timeout)


def resize(path: StrPath, size: int, *, fmt: str, shrink: bool = False,
           timeout: float = DEFAULT_TIMEOUT) -> None:
    """``qemu-img resize`` to an absolute size in bytes (``--shrink`` when allowed)."""
    args = ["resize", "-q", "-f", fmt]
    if shrink:
        args.append("--shrink")
    args += ["--", os.fspath(path), str(size)]
    run(args, timeout=timeout)


def snapshot(path: StrPath, action: str, name: str, *, fmt: str,
             timeout: float = DEFAULT_TIMEOUT) -> None:
    """``qemu-img snapshot -c|-a|-d name``; ``action`` is ``create``, ``apply`` or ``delete``.

    qemu-img matches ``name`` against snapshot names only (not ids). ``snapshot``
    has no ``-f``, so the image is named by a ``json:`` description that pins the
    format and keeps qemu-img from opening any backing file (internal snapshots
    live in the top image alone).
    """
    flags = {"create": "-c", "apply": "-a", "delete": "-d"}
    if action not in flags:
        raise ValueError(f"unknown snapshot action {action!r}")
    run(["snapshot", "-q", flags[action], name, "--", image_json(path, fmt=fmt)],
        timeout=timeout)


def image_json(path: StrPath, *, fmt: str, backing: bool = False) -> str:
    """A ``json:`` filename opening plain file ``path`` as ``fmt`` without probing.

    Unless ``backing`` is true, a qcow2 image's backing file is not opened.
    """
    spec: dict[str, Any] = {"driver": fmt,
                            "file": {"driver": "file", "filename": os.fspath(path)}}
    if fmt == "qcow2" and not backing:
        spec["backing"] = None
    return "json:" + json.dumps(spec, separators=(",", ":"))


def _escape_opt(value: str) -> str:
    # qemu option syntax: a literal comma is written as two.
    return value.replace(",", ",,")



def exists(path: StrPath) -> bool:
    """Whether ``path`` names an existing regular file."""
    return Path(path).is_file()
