"""CD: wrapping ISOs, building them from a directory with real tools, reading them back."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from vmanager.errors import CommandError, ConfigError, HostError, NotFoundError
from vmanager.storage import CD
from vmanager.storage import cd as cd_module

needs_xorriso = pytest.mark.skipif(shutil.which("xorriso") is None, reason="needs xorriso")
SECTOR = 2048


def test_missing_iso_names_it(tmp_path: Path) -> None:
    with pytest.raises(NotFoundError, match=r"nope\.iso"):
        CD(tmp_path / "nope.iso")


def test_directory_is_not_an_iso(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not a regular file"):
        CD(tmp_path)


def test_bad_interface(tmp_path: Path) -> None:
    (tmp_path / "x.iso").write_bytes(b"")
    with pytest.raises(ConfigError, match="virtio"):
        CD(tmp_path / "x.iso", interface="virtio")


def test_iso_gone_before_start(tmp_path: Path) -> None:
    iso = tmp_path / "x.iso"
    iso.write_bytes(b"")
    cd = CD(iso)
    iso.unlink()
    with pytest.raises(NotFoundError, match=r"x\.iso"):
        cd.qemu_args(0)


def _seed(tmp_path: Path) -> dict[str, bytes]:
    """A NoCloud-like seed with a subdirectory, a long lower-case name and binary data."""
    src = tmp_path / "seed"
    (src / "scripts").mkdir(parents=True)
    files = {
        "user-data": b"#cloud-config\nhostname: web-1\n",
        "meta-data": b"instance-id: iid-web-1\n",
        "scripts/a-rather-long-lower-case-file-name.sh": b"#!/bin/sh\necho hi\n",
        "blob.bin": bytes(range(256)) * 40,
    }
    for name, data in files.items():
        (src / name).write_bytes(data)
    return files


def _volume_descriptors(iso: Path) -> list[tuple[int, bytes]]:
    """(type, sector) for each ISO 9660 volume descriptor, read from sector 16 on."""
    out = []
    with iso.open("rb") as f:
        f.seek(16 * SECTOR)
        while True:
            sector = f.read(SECTOR)
            assert sector[1:6] == b"CD001", "not an ISO 9660 volume descriptor"
            out.append((sector[0], sector))
            if sector[0] == 255:
                return out


def _extract(iso: Path, dest: Path) -> dict[str, bytes]:
    subprocess.run(["xorriso", "-osirrox", "on", "-indev", str(iso), "-extract", "/",
                    str(dest)], check=True, capture_output=True, timeout=60)
    return {str(p.relative_to(dest)): p.read_bytes() for p in dest.rglob("*") if p.is_file()}


def _check_iso(iso: Path, files: dict[str, bytes], tmp_path: Path, volid: str) -> None:
    descriptors = _volume_descriptors(iso)
    (_, primary), = [d for d in descriptors if d[0] == 1]
    assert primary[40:72].decode("ascii").rstrip() == volid
    joliet = [s for t, s in descriptors if t == 2 and s[88:91] in (b"%/@", b"%/C", b"%/E")]
    assert joliet, "no Joliet supplementary volume descriptor"
    assert _extract(iso, tmp_path / "extracted") == files  # Rock Ridge keeps the names


@needs_xorriso
def test_from_directory_with_output(tmp_path: Path) -> None:
    files = _seed(tmp_path)
    out = tmp_path / "seed.iso"
    cd = CD.from_directory(tmp_path / "seed", output=out)
    assert cd.path == out and not cd.owned
    _check_iso(out, files, tmp_path, "cidata")
    cd.close()
    assert out.exists()  # a CD never deletes a file it was told to write
    assert sorted(p.name for p in tmp_path.iterdir()) == ["extracted", "seed", "seed.iso"]


@needs_xorriso
def test_from_directory_temporary_is_removed_on_close(tmp_path: Path) -> None:
    files = _seed(tmp_path)
    with CD.from_directory(tmp_path / "seed", volume_id="SEED_2") as cd:
        assert cd.owned
        _check_iso(cd.path, files, tmp_path, "SEED_2")
        iso = cd.path
    assert not iso.exists() and not iso.parent.exists()
    cd.close()  # idempotent


@needs_xorriso
def test_output_replaced_only_after_success(tmp_path: Path) -> None:
    files = _seed(tmp_path)
    out = tmp_path / "seed.iso"
    out.write_bytes(b"old")
    CD.from_directory(tmp_path / "seed", output=out)
    _check_iso(out, files, tmp_path, "cidata")


@pytest.mark.skipif(shutil.which("genisoimage") is None, reason="needs genisoimage")
@needs_xorriso  # only to read the result back
def test_genisoimage_fallback(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cd_module, "ISO_TOOLS", (("no-such-iso-tool",), ("genisoimage",)))
    files = _seed(tmp_path)
    cd = CD.from_directory(tmp_path / "seed", output=tmp_path / "g.iso")
    _check_iso(cd.path, files, tmp_path, "cidata")


def test_no_iso_tool(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cd_module, "ISO_TOOLS", (("no-such-iso-tool",),))
    _seed(tmp_path)
    with pytest.raises(HostError, match="xorriso"):
        CD.from_directory(tmp_path / "seed")


def test_failed_build_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    tool = tmp_path / "bad-tool"
    tool.write_text("#!/bin/sh\necho 'cannot do it' >&2\nexit 3\n")
    tool.chmod(0o755)
    monkeypatch.setattr(cd_module, "ISO_TOOLS", ((str(tool),),))
    _seed(tmp_path)
    made: list[str] = []
    real_mkdtemp = tempfile.mkdtemp

    def spy(*args: object, **kwargs: object) -> str:
        made.append(real_mkdtemp(*args, **kwargs))  # type: ignore[call-overload]
        return made[-1]

    monkeypatch.setattr(tempfile, "mkdtemp", spy)
    with pytest.raises(CommandError, match="cannot do it") as caught:
        CD.from_directory(tmp_path / "seed")
    assert caught.value.argv[0] == str(tool) and caught.value.returncode == 3
    assert made and not Path(made[0]).exists()

    before = sorted(p.name for p in tmp_path.iterdir())
    with pytest.raises(CommandError):
        CD.from_directory(tmp_path / "seed", output=tmp_path / "out.iso")
    assert sorted(p.name for p in tmp_path.iterdir()) == before


def test_bad_inputs(tmp_path: Path) -> None:
    with pytest.raises(NotFoundError, match="ghost"):
        CD.from_directory(tmp_path / "ghost")
    (tmp_path / "file").write_bytes(b"")
    with pytest.raises(ConfigError, match="not a directory"):
        CD.from_directory(tmp_path / "file")
    for volid in ("", "x" * 33, "a b", "-V", "ä"):
        with pytest.raises(ConfigError, match="volume id"):
            CD.from_directory(tmp_path, volume_id=volid)
    with pytest.raises(NotFoundError, match="nodir"):
        CD.from_directory(tmp_path, output=tmp_path / "nodir" / "x.iso")
