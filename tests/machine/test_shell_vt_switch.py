"""The backdoor shell keeps answering across VT switches (the hvc0 flake).

On ``hvc0`` (a virtconsole: a tty with a line discipline) the shell stopped
receiving input about once a CI run in five, after VT switches. It now lives on
a virtio serial port without a tty layer. 500 round trips: switch to tty2 with
the keyboard, check from the shell, switch back, check again.
"""

from __future__ import annotations

import os

import pytest

from vmanager import Machine

pytestmark = [pytest.mark.guest, pytest.mark.slow]

ROUNDS = int(os.environ.get("VMANAGER_VT_ROUNDS", "500"))


def _switch(m: Machine, key: str, want: str) -> None:
    """Press ``key``; wait (in the guest, a shell round trip) until ``want`` is active.

    A key press can be lost under load before the kernel sees it (that is not
    what this test is about), so it is pressed again, a few times at most. The
    shell must answer every check.
    """
    for _ in range(5):
        m.send_key(key)
        out = m.succeed(f"i=0; until read -r a < /sys/class/tty/tty0/active && "
                        f"[ $a = {want} ]; do i=$((i+1)); [ $i -gt 200 ] && break; "
                        "usleep 10000; done; echo $a", timeout=30)
        if out.strip() == want:
            return
    pytest.fail(f"{want} never became the active VT (the shell kept answering)")


@pytest.mark.timeout(2400)
def test_the_shell_answers_through_500_vt_switch_round_trips(shared_machine: Machine) -> None:
    m = shared_machine
    for i in range(ROUNDS):
        _switch(m, "ctrl-alt-f2", "tty2")
        _switch(m, "ctrl-alt-f1", "tty1")
        if i % 100 == 0:  # chvt from the shell itself as well (the screen tests do)
            m.succeed("chvt 2 && chvt 1", timeout=30)
    assert m.succeed("echo done").strip() == "done"
