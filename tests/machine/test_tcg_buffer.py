"""tcg_tb_size caps TCG's translation buffer: QEMU maps that much code buffer, not 1 GiB."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from vmanager.errors import ConfigError

pytestmark = pytest.mark.guest


def _code_buffers_mib(pid: int) -> list[int]:
    """Sizes of QEMU's executable anonymous mappings (TCG's code buffer)."""
    sizes = []
    for line in Path(f"/proc/{pid}/maps").read_text().splitlines():
        fields = line.split()
        if fields[1].startswith("rwx") and len(fields) < 6:
            start, end = (int(x, 16) for x in fields[0].split("-"))
            sizes.append((end - start) >> 20)
    return sizes


def test_translation_buffer_is_the_size_asked_for(make_machine: Any) -> None:
    m = make_machine(memory=128, accel="tcg", tcg_tb_size=16)
    m.start_vm()
    assert "tcg,tb-size=16" in m.argv
    assert _code_buffers_mib(m.pid) and max(_code_buffers_mib(m.pid)) <= 16
    assert m.definition()["tcg_tb_size"] == 16
    m.wait_ready()  # the guest boots with the small buffer
    assert m.succeed("echo ok").strip() == "ok"


def test_none_leaves_qemus_size(make_machine: Any) -> None:
    m = make_machine(memory=128, accel="tcg", tcg_tb_size=None)
    m.start_vm()
    assert not any(a.startswith("tcg,tb-size") for a in m.argv)
    assert max(_code_buffers_mib(m.pid)) > 256


def test_the_tiny_guest_defaults_to_a_small_buffer(tiny: Any) -> None:
    from vmanager import Machine
    from vmanager.guests.tiny import TCG_TB_SIZE
    from vmanager.machine.definition import to_json
    assert tiny.machine_args()["tcg_tb_size"] == TCG_TB_SIZE == 16
    m = Machine("tb-default", **tiny.machine_args())
    assert to_json(m)["tcg_tb_size"] == 16  # recorded, so a reattach/restart keeps it


@pytest.mark.parametrize("bad", [0, 4, 5000, True, 16.0, "16"])
def test_bad_sizes_are_refused(make_machine: Any, bad: object) -> None:
    with pytest.raises(ConfigError, match="tcg_tb_size"):
        make_machine(tcg_tb_size=bad)
