"""A real OS as a template: Debian 12 booted once, its clones resume it in a second.

The source boots from an overlay of the cached image with a cloud-init seed and
writes a marker; the template copies its disk. Two clones, each on its own
overlay of that copy and with its own NIC, answer through the guest agent at
once, see the marker, keep their own writes (on disk, past the guest's cache)
and power off through ACPI.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from vmanager import CloudInit, Harddrive, Machine, images
from vmtest_util import unique_name

pytestmark = pytest.mark.guest


def test_debian_clones_resume_the_booted_guest_with_their_own_disks(
        debian_image: images.Image, tmp_path: Path) -> None:
    disk = Harddrive(tmp_path / "src.qcow2", backing=debian_image.path)
    disk.create()
    seed = CloudInit(hostname="deb-tmpl")
    name = unique_name("dts")
    with Machine(name, memory=1024, harddrives=disk, cloud_init=seed,
                 template_source=True) as source:
        source.start_vm()
        source.wait_ready(600)
        source.succeed("cloud-init status --wait >/dev/null; echo booted-once > /root/marker; "
                       "sync", timeout=600)
        source.save_template(tmp_path / "t")
    clones = [Machine(unique_name("dtc"), memory=1024, cloud_init=seed, nics=1,
                      template=tmp_path / "t") for _ in range(2)]
    try:
        for m in clones:
            started = time.monotonic()
            m.start_vm()
            m.wait_ready(60)
            # no boot: well under the ~25 s a boot to the agent takes under TCG
            assert time.monotonic() - started < 15
            assert m.commands.via == "agent"
            assert m.succeed("cat /root/marker").strip() == "booted-once"
        a, b = clones
        a.succeed("echo only-a > /root/marker; sync; echo 3 > /proc/sys/vm/drop_caches")
        b.succeed("sync; echo 3 > /proc/sys/vm/drop_caches")
        assert a.succeed("cat /root/marker").strip() == "only-a"
        assert b.succeed("cat /root/marker").strip() == "booted-once"
        # each clone's own NIC, hot-plugged after the load, with its own MAC
        for m in clones:
            mac = m.nics[0].mac
            m.succeed(f"for i in $(seq 300); do grep -qx {mac} /sys/class/net/*/address "
                      "&& exit 0; sleep 0.1; done; exit 1", timeout=60)
        for m in clones:
            assert m.shutdown(timeout=120) == 0
    finally:
        for m in clones:
            m.kill()
