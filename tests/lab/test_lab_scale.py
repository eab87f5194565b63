"""Scale: a 20-machine lab comes up, every shell answers, and down leaves nothing.

The same with 20 clones of one template (``template =``): one boot instead of
twenty, so it adds only seconds to the suite.

Prints how long each phase took and the memory the lab's QEMUs held together at
their peak (run pytest with ``-s`` to see it). Timing goals live in bench/, not
here: this test proves the lab works at that size and cleans up after itself.
"""

from __future__ import annotations

import os
import secrets
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from vmanager import Machine
from vmanager import lab as labs
from vmanager.lab import record as labrec
from vmanager.net import list_namespaces, stable_mac
from vmanager.state import records
from vmanager.state.persist import attach, detach

pytestmark = [pytest.mark.guest, pytest.mark.net]

if os.geteuid() != 0:
    pytest.skip("labs need root (namespaces, bridges)", allow_module_level=True)

COUNT = 20


def _lab_source(tag: str, boot: str = 'guest = "tiny"\nmemory = 128') -> str:
    lines = [f'[lab]\nname = "l{tag}"\n', f"[switches.s{tag}]\n"]
    for i in range(COUNT):
        lines.append(f'[machines.m{tag}x{i}]\n{boot}\n'
                     f'nics = [{{ switch = "s{tag}" }}]\n')
    return "\n".join(lines)


def _rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def _answer(name: str) -> tuple[str, float]:
    machine = attach(name, timeout=60)
    try:
        machine.wait_ready(600)
        out = machine.succeed("hostname", timeout=120).strip()
        return out, _rss_mib(machine.pid) if machine.pid else 0.0
    finally:
        detach(machine)


def _up_answer_down(path: Path, answer: Callable[[str], tuple[str, float]],
                    expected: Callable[[list[str]], list[str]], what: str) -> None:
    """``up`` the lab, ask every machine (``answer``: what it said, its RSS), ``down``."""
    lab = labs.load(path)
    names = [m.name for m in lab.machines]
    ns_before = set(list_namespaces())
    t0 = time.monotonic()
    try:
        result = labs.up(lab, timeout=600)
        t_up = time.monotonic() - t0
        assert len(result.made) == COUNT + 1
        with ThreadPoolExecutor(8) as pool:
            answers = list(pool.map(answer, names))
        t_ready = time.monotonic() - t0
        assert [a for a, _ in answers] == expected(names)
        peak = sum(rss for _, rss in answers)
    finally:
        t1 = time.monotonic()
        removed = labs.down(lab.name, timeout=300)
        t_down = time.monotonic() - t1
    assert len(removed) == COUNT + 1
    assert labrec.load(lab.name) is None
    assert not [n for n in names if records.find(n) is not None]
    assert not (set(list_namespaces()) - ns_before) & set(names)
    print(f"\n{what}: up {t_up:.1f} s, every shell answered after {t_ready:.1f} s, "
          f"down {t_down:.1f} s; the QEMUs' RSS together {peak:.0f} MiB "
          f"({peak / COUNT:.0f} MiB each)")


def test_twenty_machine_lab_up_answers_and_down(tiny: Any, tmp_path: Path) -> None:
    path = tmp_path / "scale.toml"
    path.write_text(_lab_source(secrets.token_hex(2)))
    # every guest's own shell answered with its own name
    _up_answer_down(path, _answer, lambda names: names, f"{COUNT}-machine lab")


def _clone_answer(name: str) -> tuple[str, float]:
    """A clone's shell answers with the MAC of its own hot-plugged NIC (all share a host name)."""
    machine = attach(name, timeout=60)
    try:
        mac = machine.succeed("i=0; while ! [ -e /sys/class/net/eth0 ] && [ $i -lt 600 ]; do "
                              "sleep 0.1; i=$((i+1)); done; cat /sys/class/net/eth0/address",
                              timeout=120).strip()
        return mac, _rss_mib(machine.pid) if machine.pid else 0.0
    finally:
        detach(machine)


def test_twenty_clones_of_a_template_lab_up_answers_and_down(tiny: Any, tmp_path: Path) -> None:
    tag = secrets.token_hex(2)
    source = f"t{tag}"
    src = Machine(source, **tiny.machine_args(source), memory=128, template_source=True)
    try:
        src.start_vm()
        src.wait_ready(120)
        src.save_template(tmp_path / "tmpl")
    finally:
        src.kill()
    path = tmp_path / "scale.toml"
    path.write_text(_lab_source(tag, boot='template = "tmpl"'))
    # every clone resumed the template's guest and has its own NIC
    _up_answer_down(path, _clone_answer, lambda names: [stable_mac(n, 0) for n in names],
                    f"{COUNT} clones of a template")
