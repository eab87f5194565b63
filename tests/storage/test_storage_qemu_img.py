"""Unit tier: parsing qemu-img JSON, running qemu-img, argument building."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import pytest

from vmanager.errors import CommandError, ConfigError, HostError, StorageError
from vmanager.storage import CD, Harddrive, ImageInfo, QemuImgError, SnapshotInfo, qemu_img
from vmanager.storage.chain import has_protocol

SAMPLE = {
    "snapshots": [{"icount": 0, "vm-clock-nsec": 500_000_000, "name": "clean",
                   "date-sec": 1700000000, "date-nsec": 250_000_000, "vm-clock-sec": 3,
                   "id": "1", "vm-state-size": 4096}],
    "virtual-size": 67108864, "filename": "/x/a.qcow2", "cluster-size": 65536,
    "format": "qcow2", "actual-size": 200704,
    "format-specific": {"type": "qcow2", "data": {"compat": "1.1", "corrupt": False,
                                                  "data-file": "/y/data.raw"}},
    "backing-filename-format": "qcow2", "full-backing-filename": "/x/base.qcow2",
    "backing-filename": "base.qcow2", "dirty-flag": True,
}


def test_image_info_from_json() -> None:
    info = ImageInfo.from_json(SAMPLE)
    assert (info.format, info.virtual_size, info.actual_size) == ("qcow2", 64 << 20, 200704)
    assert info.backing_file == "base.qcow2" and info.backing_format == "qcow2"
    assert info.full_backing_file == "/x/base.qcow2"
    assert info.dirty is True and info.corrupt is False
    assert info.data_file == "/y/data.raw"
    (snap,) = info.snapshots
    assert snap == info.snapshot("clean")
    assert info.snapshot("other") is None
    assert (snap.id, snap.name, snap.vm_state_size, snap.icount) == ("1", "clean", 4096, 0)
    assert snap.date.timestamp() == pytest.approx(1700000000.25)
    assert snap.vm_clock.total_seconds() == pytest.approx(3.5)


def test_info_results_are_frozen() -> None:
    info = ImageInfo.from_json(SAMPLE)
    with pytest.raises(AttributeError):
        info.format = "raw"  # type: ignore[misc]


@pytest.mark.parametrize("bad", [{}, {"format": "qcow2", "filename": "x", "virtual-size": "big"}])
def test_image_info_rejects_garbage(bad: dict[str, object]) -> None:
    with pytest.raises(StorageError):
        ImageInfo.from_json(bad)


def test_snapshot_info_rejects_garbage() -> None:
    with pytest.raises(StorageError):
        SnapshotInfo.from_json({"name": "x"})


def test_missing_binary_is_a_host_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(qemu_img, "QEMU_IMG", "qemu-img-not-installed-here")
    with pytest.raises(HostError, match="qemu-img-not-installed-here"):
        qemu_img.info("/nonexistent", fmt="qcow2")


def _fake_qemu_img(tmp_path: Path, body: str) -> str:
    script = tmp_path / "fake-qemu-img"
    script.write_text(f"#!/bin/sh\n{body}\n")
    script.chmod(0o755)
    return str(script)


def test_failure_carries_argv_and_stderr(tmp_path: Path) -> None:
    missing = tmp_path / "missing.qcow2"
    with pytest.raises(QemuImgError) as caught:
        qemu_img.info(missing, fmt="qcow2")
    err = caught.value
    assert isinstance(err, StorageError) and isinstance(err, CommandError)
    assert str(missing) in err.argv and err.argv[1] == "info"
    assert err.returncode == 1
    assert "missing.qcow2" in err.stderr and "missing.qcow2" in str(err)


def test_timeout(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(qemu_img, "QEMU_IMG", _fake_qemu_img(tmp_path, "exec sleep 10"))
    with pytest.raises(QemuImgError, match="timed out") as caught:
        qemu_img.run(["info"], timeout=0.3)
    assert caught.value.returncode is None


def test_probe_limits_reach_the_child(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(qemu_img, "QEMU_IMG", _fake_qemu_img(
        tmp_path, 'echo "{\\"fsize\\": \\"$(ulimit -f)\\", \\"as\\": \\"$(ulimit -v)\\"}"'))
    got = qemu_img.run_json(["info"], limits=qemu_img.PROBE_LIMITS)
    assert got == {"fsize": "0", "as": str((1 << 30) // 1024)}


def test_non_json_output_is_an_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(qemu_img, "QEMU_IMG", _fake_qemu_img(tmp_path, "echo hello"))
    with pytest.raises(QemuImgError, match="not JSON"):
        qemu_img.run_json(["info"])


@pytest.mark.parametrize(("name", "expected"), [
    ("json:{}", True), ("nbd://host/x", True), ("file:/etc/passwd", True), ("http:x", True),
    ("/abs/a:b", False), ("./a:b", False), ("base.qcow2", False), ("../x.qcow2", False),
])
def test_has_protocol(name: str, expected: bool) -> None:
    assert has_protocol(name) is expected


def test_image_json() -> None:
    spec = qemu_img.image_json('/a,b "c"', fmt="qcow2")
    assert spec.startswith("json:")
    assert json.loads(spec[5:]) == {"driver": "qcow2", "backing": None,
                                    "file": {"driver": "file", "filename": '/a,b "c"'}}
    assert "backing" not in json.loads(qemu_img.image_json("/a", fmt="raw")[5:])


def test_qemu_strings_split_back_into_the_qemu_args(tmp_path: Path) -> None:
    odd = tmp_path / "my disk,1.qcow2"
    hd = Harddrive(odd, readonly=True, size="1M")
    hd.create()
    argv = shlex.split(hd.qemu_string)
    tag = argv[-1].split("id=")[1]
    assert tag.startswith("hd-") and argv == hd._args(tag, tag, bootindex=None, bus=None)
    assert json.loads(argv[1])["filename"] == str(odd)
    assert argv[-2:] == ["-device", f"virtio-blk-pci,drive={tag},id={tag}"]
    iso = tmp_path / "x.iso"
    iso.write_bytes(b"")
    argv = shlex.split(CD(iso).qemu_string)
    assert argv[-1].startswith("ide-cd,drive=cd-") and json.loads(argv[1])["filename"] == str(iso)
    other = shlex.split(CD(tmp_path / "my disk,1.qcow2").qemu_string)
    assert other[-1] != argv[-1]  # ids follow the path: strings combine on one command line


@pytest.mark.parametrize("index", [-1, True, "0", 1.0])
def test_bad_index(tmp_path: Path, index: object) -> None:
    iso = tmp_path / "x.iso"
    iso.write_bytes(b"")
    with pytest.raises(ConfigError):
        CD(iso).qemu_args(index)  # type: ignore[arg-type]
    with pytest.raises(ConfigError):
        Harddrive(tmp_path / "d.qcow2").node_name(index)  # type: ignore[arg-type]


def test_cd_args(tmp_path: Path) -> None:
    iso = tmp_path / "x.iso"
    iso.write_bytes(b"")
    args = CD(iso).qemu_args(2, bootindex=1, bus="ide.2")
    assert args[0::2] == ["-blockdev", "-blockdev", "-device"]
    assert json.loads(args[1]) == {"driver": "file", "filename": str(iso),
                                   "node-name": "cd2-file", "read-only": True}
    assert json.loads(args[3]) == {"driver": "raw", "file": "cd2-file", "node-name": "cd2",
                                   "read-only": True}
    assert args[5] == "ide-cd,drive=cd2,id=cd2,bus=ide.2,bootindex=1"
    scsi = CD(iso, interface="scsi").qemu_args(0)
    assert scsi[-4:] == ["-device", "virtio-scsi-pci,id=cd0-scsi",
                         "-device", "scsi-cd,drive=cd0,id=cd0,bus=cd0-scsi.0"]


@pytest.mark.parametrize("kwargs", [{"format": "vmdk"}, {"interface": "floppy"},
                                    {"readonly": True, "interface": "ide"},
                                    {"format": "raw", "backing": "/x/base.qcow2"},
                                    {"backing": "/x/b", "backing_format": "vmdk"}])
def test_bad_harddrive_options(tmp_path: Path, kwargs: dict[str, object]) -> None:
    with pytest.raises(ConfigError):
        Harddrive(tmp_path / "d.img", **kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize("size", ["abc", "-1G", "0", 0, -5, True, 1.5, "10X"])
def test_bad_sizes(tmp_path: Path, size: object) -> None:
    with pytest.raises(ConfigError):
        Harddrive(tmp_path / "d.qcow2", size=size)  # type: ignore[arg-type]
    with pytest.raises(ConfigError):
        Harddrive(tmp_path / "d.qcow2").create(size)  # type: ignore[arg-type]
    assert not (tmp_path / "d.qcow2").exists()
