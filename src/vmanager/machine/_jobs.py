"""Running QMP background jobs (``snapshot-save`` and friends) to their end."""

from __future__ import annotations

import itertools
import tempfile
from pathlib import Path
from typing import Any

from vmanager.errors import HostError, QemuError, QMPError
from vmanager.qemu.qmp import Event, Monitor

_ids = itertools.count(1)


def new_id(prefix: str) -> str:
    """A job id unique in this process."""
    return f"vm-{prefix}-{next(_ids)}"


def run_job(monitor: Monitor, command: str, arguments: dict[str, Any], *, prefix: str,
            timeout: float) -> None:
    """Start job ``command`` and wait until it concludes; dismiss it.

    Raises :class:`QMPError` (``command``, the job's error text) when the job
    failed and :class:`QemuError` when it did not end within ``timeout`` s.
    """
    job_id = new_id(prefix)
    mark = monitor.event_mark()
    monitor.execute(command, {"job-id": job_id, **arguments})

    def ended(ev: Event) -> bool:
        data = ev.get("data") or {}
        return bool(data.get("id") == job_id and data.get("status") in ("concluded", "null"))

    try:
        monitor.wait_event("JOB_STATUS_CHANGE", timeout=timeout, since=mark, match=ended)
    except QemuError as exc:
        raise QemuError(f"{monitor.name}: {command} job {job_id} did not finish within "
                        f"{timeout} s") from exc
    error: str | None = None
    for job in monitor.execute("query-jobs"):
        if job.get("id") == job_id:
            error = job.get("error")
            if job.get("status") == "concluded":
                monitor.execute("job-dismiss", {"id": job_id})
    if error:
        raise QMPError(f"{monitor.name}: {command} failed: {error}", command=command,
                       error_class="JobError", description=error)


def temp_beside(target: Path, what: str) -> tuple[int, Path]:
    """Open a temporary file next to ``target`` (renamed onto it when complete).

    Returns the open fd and its path; :class:`HostError` names ``what`` could
    not be written where.
    """
    try:
        fd, tmpname = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp",
                                       dir=target.parent)
    except OSError as exc:
        raise HostError(f"cannot write {what} to {target}: {exc.strerror} "
                        f"(errno {exc.errno})") from exc
    return fd, Path(tmpname)
