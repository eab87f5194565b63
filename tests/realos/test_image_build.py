"""images.build: a clear error without the archive, nothing left behind when it fails or
is killed, a cache hit that costs nothing, and a disk that carries its own boot loader."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from vmanager import images
from vmanager.errors import ConfigError, GuestBuildError
from vmanager.images import _disk, _esp

pytestmark = pytest.mark.guest
UNREACHABLE = "http://127.0.0.1:9/debian"  # nothing listens on the discard port


def _processes_mentioning(text: str) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
            except OSError:
                continue
            if text.encode() in cmdline and int(entry) != os.getpid():
                found.append(int(entry))
    return found


def _loops_backed_by(directory: Path) -> list[str]:
    found = []
    for backing in Path("/sys/block").glob("loop*/loop/backing_file"):
        try:
            if str(directory) in backing.read_text():
                found.append(backing.parent.parent.name)
        except OSError:
            continue
    return found


def test_bad_options_are_config_errors() -> None:
    for kwargs in ({"name": "windows-95"}, {"size": "10M"}, {"packages": "vim"},
                   {"packages": ["vim; reboot"]}, {"root_password": "a\nb"},
                   {"mirror": "ftp://x"}):
        with pytest.raises(ConfigError):
            images.build(**kwargs)  # type: ignore[arg-type]


def test_unreachable_archive_is_a_clear_error(tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VMANAGER_CACHE_DIR", str(tmp_path))
    with pytest.raises(GuestBuildError, match="cannot reach the Debian archive") as info:
        images.build("debian-12", mirror=UNREACHABLE)
    assert "127.0.0.1:9" in str(info.value)
    cache = tmp_path / "images"
    assert sorted(p.name for p in cache.iterdir()) == [".lock"]
    assert _disk.mounts_under(tmp_path) == [] and _loops_backed_by(tmp_path) == []


def test_killed_build_leaves_no_process_or_mount(tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """SIGKILL the building process mid-download: mmdebstrap and apt die with it,
    its mounts were never visible here, and the next build clears its scratch dir."""
    env = {**os.environ, "VMANAGER_CACHE_DIR": str(tmp_path)}
    code = ("import sys\nfrom vmanager import images\n"
            "images.build('debian-12', progress=lambda s: print(s, flush=True))\n")
    proc = subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    assert proc.stdout is not None
    seen = []
    try:
        for line in proc.stdout:
            seen.append(line)
            if "downloading packages" in line or "extracting" in line:
                break
        else:
            pytest.fail("the build never got to downloading: " + "".join(seen))
        time.sleep(1)
        scratch = list((tmp_path / "images").glob(".imgbuild-*"))
        assert scratch, "no scratch directory while building"
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    deadline = time.monotonic() + 20
    while _processes_mentioning(str(tmp_path)) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _processes_mentioning(str(tmp_path)) == []
    assert _disk.mounts_under(tmp_path) == []
    monkeypatch.setenv("VMANAGER_CACHE_DIR", str(tmp_path))
    with pytest.raises(GuestBuildError):
        images.build("debian-12", mirror=UNREACHABLE)
    assert list((tmp_path / "images").glob(".imgbuild-*")) == []


def test_cached_image_has_grub_in_its_mbr_and_on_its_esp(debian_image: images.Image,
                                                         tmp_path: Path) -> None:
    started = time.monotonic()
    again = images.build("debian-12")
    assert again.cached and again.path == debian_image.path
    assert time.monotonic() - started < 5
    copy = images.build("debian-12", tmp_path / "mine.qcow2")
    assert copy.path == tmp_path / "mine.qcow2" and copy.path.stat().st_size > 100 << 20
    raw = tmp_path / "head.raw"
    esp_end = _disk.PART_START + _esp.ESP_SIZE
    subprocess.run(["qemu-img", "dd", "-f", "qcow2", "-O", "raw", "bs=1M",
                    f"count={esp_end >> 20}", f"if={debian_image.path}", f"of={raw}"],
                   check=True)
    head = raw.read_bytes()[:512]
    assert head[510:512] == b"\x55\xaa"
    assert b"GRUB" in head                                  # boot.img's own message

    def entry(i: int) -> tuple[int, int, int, int]:         # boot flag, type, start, sectors
        e = head[446 + 16 * i:446 + 16 * (i + 1)]
        return (e[0], e[4], int.from_bytes(e[8:12], "little"),
                int.from_bytes(e[12:16], "little"))

    assert entry(0) == (0, 0xEF, 2048, _esp.ESP_SIZE // 512)       # the EFI system partition
    assert entry(1)[:3] == (0x80, 0x83, esp_end // 512)             # bootable Linux root, last
    # UEFI's removable-media path on the ESP: a PE image (GRUB for x86_64 UEFI)
    efi = subprocess.run(["mtype", "-i", f"{raw}@@{_disk.PART_START}",
                          "::/EFI/BOOT/BOOTX64.EFI"], capture_output=True, check=True).stdout
    assert efi[:2] == b"MZ" and len(efi) > 100_000
