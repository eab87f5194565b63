"""Running a host program: argv only, a timeout always, its failures as vmanager errors.

The one place ``subprocess.run`` is called for a program whose result matters
(qemu-img, tesseract, the ISO tools, apt-get, the namespace helper...), so
that every caller reports a missing program, a timeout and a failure the same
way::

    program missing or not executable  -> HostError ("cannot run 'x': ...")
    still running after ``timeout`` s   -> ``error`` (a CommandError), returncode None
    exit status not in ``ok``           -> ``error`` with argv, status, stdout, stderr
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable, Collection, Mapping, Sequence
from pathlib import Path
from typing import Literal, overload

from vmanager.errors import CommandError, HostError


@overload
def run(argv: Sequence[str], *, timeout: float, what: str | None = ...,
        input: str | None = ..., text: Literal[True] = ..., ok: Collection[int] = ...,
        error: type[CommandError] = ..., cwd: str | os.PathLike[str] | None = ...,
        env: Mapping[str, str] | None = ..., pass_fds: Sequence[int] = ...,
        preexec_fn: Callable[[], object] | None = ...) -> subprocess.CompletedProcess[str]: ...


@overload
def run(argv: Sequence[str], *, timeout: float, what: str | None = ...,
        input: bytes | None = ..., text: Literal[False], ok: Collection[int] = ...,
        error: type[CommandError] = ..., cwd: str | os.PathLike[str] | None = ...,
        env: Mapping[str, str] | None = ..., pass_fds: Sequence[int] = ...,
        preexec_fn: Callable[[], object] | None = ...) -> subprocess.CompletedProcess[bytes]: ...


def run(argv: Sequence[str], *, timeout: float, what: str | None = None,
        input: str | bytes | None = None, text: bool = True, ok: Collection[int] = (0,),
        error: type[CommandError] = CommandError, cwd: str | os.PathLike[str] | None = None,
        env: Mapping[str, str] | None = None, pass_fds: Sequence[int] = (),
        preexec_fn: Callable[[], object] | None = None,
        ) -> subprocess.CompletedProcess[str] | subprocess.CompletedProcess[bytes]:
    """Run ``argv`` (no shell), wait at most ``timeout`` s, return the finished process.

    ``what`` names the program in messages (default: its file name). stdin is
    ``input`` or nothing (``/dev/null``). An exit status in ``ok`` is success;
    any other raises ``error``.
    """
    args = [os.fspath(a) for a in argv]
    name = what or Path(args[0]).name
    try:
        proc = subprocess.run(args, input=input, capture_output=True, text=text, check=False,
                              timeout=timeout, cwd=cwd,
                              env=dict(env) if env is not None else None,
                              pass_fds=tuple(pass_fds), preexec_fn=preexec_fn,
                              stdin=subprocess.DEVNULL if input is None else None)
    except FileNotFoundError as exc:
        raise HostError(f"cannot run {args[0]!r}: program not found") from exc
    except OSError as exc:
        raise HostError(f"cannot run {args[0]!r}: {exc.strerror or exc}") from exc
    except subprocess.TimeoutExpired as exc:
        raise error(f"{name} timed out: it did not finish within {timeout:g} s", argv=args,
                    returncode=None,
                    stdout=_text(exc.stdout), stderr=_text(exc.stderr)) from exc
    if proc.returncode not in ok:
        raise error(f"{name} failed (exit status {proc.returncode})", argv=args,
                    returncode=proc.returncode, stdout=_text(proc.stdout),
                    stderr=_text(proc.stderr))
    return proc


def _text(data: str | bytes | None) -> str:
    if data is None:
        return ""
    return data.decode(errors="replace") if isinstance(data, bytes) else data
