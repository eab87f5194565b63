"""A lab machine with ``guest = "debian-12"`` and a ``cloud_init`` table becomes a Machine
that boots its own overlay of the cached image with the seed in its CD drive."""

from __future__ import annotations

from pathlib import Path

import pytest

from vmanager import Machine, images
from vmanager.lab.spec import load
from vmanager.state.persist import machine_kwargs
from vmanager.storage import qemu_img

pytestmark = pytest.mark.guest
EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "debian-lab.toml"


def test_debian_lab_machine_gets_an_overlay_and_a_seed(debian_image: images.Image) -> None:
    spec = next(m for m in load(EXAMPLE).machines if m.name == "deb1")
    kw = machine_kwargs("deb1", spec.definition())
    (disk,) = kw["harddrives"]
    info = qemu_img.info(disk.path, fmt="qcow2")
    assert info.backing_file == str(debian_image.path)
    assert kw["cloud_init"].hostname == "deb1"
    m = Machine("deb1", **kw)
    assert m.definition()["cloud_init"]["users"] == ["alice"]
    assert m.definition()["cd"] is None and m.agent.enabled
    again = machine_kwargs("deb1", spec.definition())
    assert again["harddrives"][0].path == disk.path   # the same disk on the next start
    disk.path.unlink()


def test_cloud_init_and_cd_exclude_each_other() -> None:
    from vmanager import CloudInit
    from vmanager.errors import ConfigError
    with CloudInit(hostname="x").seed() as cd, \
            pytest.raises(ConfigError, match="cd or cloud_init"):
        Machine("ci1", cd=cd, cloud_init=CloudInit(hostname="y"))
    with pytest.raises(ConfigError, match="CloudInit"):
        Machine("ci1", cloud_init={"hostname": "y"})  # type: ignore[arg-type]
