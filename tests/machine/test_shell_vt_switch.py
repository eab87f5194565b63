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


def _active(m: Machine, want: str) -> None:
    # the switch is asynchronous: wait in the guest (builtins only) for the kernel
    out = m.succeed(f"i=0; until read -r a < /sys/class/tty/tty0/active && [ $a = {want} ]; "
                    "do i=$((i+1)); [ $i -gt 300 ] && exit 1; usleep 10000; done; echo ok",
                    timeout=30)
    assert out.strip() == "ok"


@pytest.mark.timeout(1800)
def test_the_shell_answers_through_500_vt_switch_round_trips(shared_machine: Machine) -> None:
    m = shared_machine
    for i in range(ROUNDS):
        m.send_key("ctrl-alt-f2")
        _active(m, "tty2")          # a shell round trip right after each switch to tty2
        m.send_key("ctrl-alt-f1")   # and back; the next round's check follows it
        if i % 100 == 0:  # chvt from the shell itself as well (the screen tests do)
            m.succeed("chvt 2 && chvt 1", timeout=30)
    _active(m, "tty1")
    assert m.succeed("echo done").strip() == "done"
