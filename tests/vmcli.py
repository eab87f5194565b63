"""Running the ``vmanager`` command the way a user does: a separate process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any


def vm(*args: str, input: str | None = None,
       timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """Run ``vmanager ARGS`` in a new process (same state/run dirs as the tests)."""
    return subprocess.run([sys.executable, "-m", "vmanager.cli.main", *args], input=input,
                          capture_output=True, text=True, timeout=timeout, env=os.environ.copy())


def ok(*args: str, **kwargs: Any) -> str:
    """Run and require exit status 0; return stdout."""
    r = vm(*args, **kwargs)
    assert r.returncode == 0, f"vmanager {' '.join(args)} -> {r.returncode}\n{r.stdout}\n{r.stderr}"
    return r.stdout


def js(*args: str) -> Any:
    """Run with ``--json`` and parse stdout."""
    return json.loads(ok("--json", *args))


def py(code: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run Python code in a second process."""
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=timeout, env=os.environ.copy())
