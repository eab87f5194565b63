"""A Machine's definition: its checked constructor arguments, as JSON and as a MachineSpec.

``to_json`` is what records store to rebuild the machine; ``spec`` is the
machine-wide part of the :class:`~vmanager.qemu.cmdline.MachineSpec`, which
every part then completes (no side effects: the argv is built from it).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vmanager import validate
from vmanager.errors import ConfigError, NotFoundError, StateError
from vmanager.machine import process
from vmanager.machine.recorder import RunInfo
from vmanager.qemu import accel as _accel
from vmanager.qemu import cmdline

if TYPE_CHECKING:
    from vmanager.machine.machine import Machine
    from vmanager.machine.part import Launch, Part


def check_cpus(cpus: object) -> int:
    """A vCPU count 1-255."""
    if isinstance(cpus, bool) or not isinstance(cpus, int) or not 1 <= cpus <= 255:
        raise ConfigError(f"cpus must be a whole number from 1 to 255, got {cpus!r}")
    return cpus


def check_tb_size(mib: object) -> int | None:
    """A TCG translation buffer size in MiB (8 to 4096), or ``None``."""
    if mib is None:
        return None
    if isinstance(mib, bool) or not isinstance(mib, int) or not 8 <= mib <= 4096:
        raise ConfigError(f"tcg_tb_size must be a whole number of MiB from 8 to 4096 (or "
                          f"None for QEMU's default), got {mib!r}")
    return mib


def check_accel(accel: object) -> str:
    """``auto``, ``kvm`` or ``tcg``."""
    if accel not in _accel.ACCEL_CHOICES:
        raise ConfigError(f"accel {accel!r} is not one of {', '.join(_accel.ACCEL_CHOICES)}")
    return str(accel)


def check_monitor_port(port: object) -> int | None:
    """A TCP port for the human monitor, or ``None``."""
    if port is not None and (isinstance(port, bool) or not isinstance(port, int) or
                             not 1 <= port <= 65535):
        raise ConfigError(f"monitor_port must be a TCP port 1-65535, got {port!r}")
    return port


def check_boot(kernel: str | Path | None, initrd: str | Path | None,
               append: str | None) -> tuple[Path | None, Path | None, str | None]:
    """Direct kernel boot: existing files, and no initrd or command line without a kernel."""
    kernel_path = _existing_file(kernel, "kernel")
    initrd_path = _existing_file(initrd, "initrd")
    if initrd_path is not None and kernel_path is None:
        raise ConfigError("initrd was given without kernel")
    if append is not None and kernel_path is None:
        raise ConfigError("append (a kernel command line) was given without kernel")
    return kernel_path, initrd_path, append


def _existing_file(value: str | Path | None, what: str) -> Path | None:
    if value is None:
        return None
    path = validate.path(value, what=what)
    if not path.is_file():
        raise NotFoundError(f"{what} {str(path)!r} does not exist or is not a file")
    return path.resolve()


def to_json(m: Machine) -> dict[str, Any]:
    """A JSON-able definition that rebuilds ``m`` (``vmanager.state.machine_kwargs``)."""
    return {
        "memory": m.memory, "cpus": m.cpus, "accel": m.accel_requested,
        "cpu_model": m.cpu_model, "machine_type": m.machine_type,
        "tcg_tb_size": m.tcg_tb_size,
        "firmware": m.firmware, "nvram": str(m.nvram) if m.nvram else None,
        "kernel": str(m.kernel) if m.kernel else None,
        "initrd": str(m.initrd) if m.initrd else None,
        "append": m.append, "extra_args": list(m.extra_args),
        "qemu_binary": m.qemu_binary,
        "disks": [{"path": str(d.path), "format": d.format, "interface": d.interface}
                  for d in m.harddrives],
        "cd": str(m.cd.path) if m.cd is not None and m.seed.cloud_init is None else None,
        "nics": m.network.count,
        "template_source": m.template.source,
        "template": str(m.template.info.path) if m.template.info is not None else None,
        "guest_agent": m.agent.enabled,
        "cloud_init": (m.seed.cloud_init.to_mapping() if m.seed.cloud_init is not None
                       else None),
    }


def run_info(m: Machine, proc: process.Process | None, parts: Sequence[Part]) -> RunInfo:
    """What ``m`` runs, for its recorder: argv, process, definition, every part's runtime."""
    if proc is None:
        raise StateError(f"machine {m.name!r} is not running", state=m.state)
    return RunInfo(name=m.name, pid=proc.pid, argv=tuple(m.argv), run_dir=str(m.run_dir),
                   accel=str(m.accel or ""), definition=to_json(m),
                   parts={p.key: p.runtime() for p in parts})


def spec(m: Machine, parts: Sequence[Part], launch: Launch, *,
         qemu: str) -> cmdline.MachineSpec:
    """The spec of ``m`` for a prepared ``launch``: the machine's own fields, then each part's.

    ``launch.pass_fds`` starts with the QMP, serial and shell listening sockets.
    """
    run_dir = launch.run_dir
    qmp_fd, serial_fd, shell_fd = launch.pass_fds[:3]
    result = cmdline.MachineSpec(
        qemu=qemu, name=m.name, accel=launch.accel,
        sockets=cmdline.Sockets(qmp_fd=qmp_fd, serial_fd=serial_fd, shell_fd=shell_fd,
                                serial_log=str(run_dir / process.SERIAL_LOG),
                                serial_log_fd=launch.serial_log_fd,
                                pidfile=str(run_dir / process.PIDFILE)),
        cpus=m.cpus, cpu_model=m.cpu_model, machine_type=m.machine_type,
        tcg_tb_size=m.tcg_tb_size, kernel=str(m.kernel) if m.kernel else None,
        initrd=str(m.initrd) if m.initrd else None, append=m.append,
        monitor_port=m.monitor_port, extra_args=tuple(m.extra_args))
    for part in parts:
        result = part.contribute(result)
    return result
