"""The parts of disk mirroring that need no QEMU: the relay pair, the destination's disks.

The whole procedure with real QEMUs and servers is proven in
tests/multihost/test_mirror.py; these pin its edges down quickly.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import threading
from pathlib import Path

import pytest

from vmanager.errors import ConfigError, NotFoundError, StorageError
from vmanager.lab import mirror
from vmanager.lab.relay import relay


def _relay_pair(run_src: Path, run_dst: Path) -> tuple[list[threading.Thread], list[int]]:
    """Both relays, joined by two pipes as the orchestrating host joins their SSH sessions."""
    to_dst_r, to_dst_w = os.pipe()
    to_src_r, to_src_w = os.pipe()
    counts: list[int] = []

    def run(**kw: object) -> None:
        try:
            counts.append(relay(timeout=20, **kw))  # type: ignore[arg-type]
        finally:
            os.close(kw["stdin"])  # type: ignore[arg-type]
    threads = [
        threading.Thread(target=run, kwargs={"run_dir": run_src, "name": "nbd-out-disk0.sock",
                                             "listen": True, "stdin": to_src_r,
                                             "stdout": to_dst_w}),
        threading.Thread(target=run, kwargs={"run_dir": run_dst, "name": "nbd.sock",
                                             "listen": False, "stdin": to_dst_r,
                                             "stdout": to_src_w})]
    for t in threads:
        t.start()
    return threads, counts


def test_the_relays_carry_a_connection_both_ways_and_end_with_it(tmp_path: Path) -> None:
    src, dst = tmp_path / "src", tmp_path / "dst"
    src.mkdir()
    dst.mkdir()
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(dst / "nbd.sock"))
    server.listen(1)
    threads, counts = _relay_pair(src, dst)
    sock_path = src / "nbd-out-disk0.sock"
    for _ in range(200):
        if sock_path.exists():
            break
        threading.Event().wait(0.01)
    client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    client.connect(str(sock_path))
    conn, _ = server.accept()  # only now: the destination connects once a client is there
    conn.sendall(b"greeting")  # the NBD server speaks first
    assert client.recv(100) == b"greeting"
    payload = os.urandom(3 << 20)
    sender = threading.Thread(target=client.sendall, args=(payload,))
    sender.start()
    got = bytearray()
    while len(got) < len(payload):
        got += conn.recv(1 << 20)
    sender.join(10)
    assert bytes(got) == payload
    client.close()  # the source's NBD client goes: both relays end, the socket goes
    for t in threads:
        t.join(10)
        assert not t.is_alive()
    assert conn.recv(10) == b""
    assert not sock_path.exists()
    assert sum(counts) >= 2 * (len(payload) + len(b"greeting"))
    conn.close()
    server.close()


def test_a_listening_relay_ends_when_its_other_side_goes_before_any_client(
        tmp_path: Path) -> None:
    r, w = os.pipe()
    out_r, out_w = os.pipe()
    os.close(w)  # the orchestrator's side is gone
    assert relay(tmp_path, "nbd-out-disk0.sock", listen=True, stdin=r, stdout=out_w,
                        timeout=20) == 0
    assert not (tmp_path / "nbd-out-disk0.sock").exists()
    for fd in (r, out_r, out_w):
        os.close(fd)


def test_relay_names_are_plain_socket_names(tmp_path: Path) -> None:
    for bad in ("../x.sock", "a/b.sock", "x", ".sock"):
        with pytest.raises(ConfigError):
            relay(tmp_path, bad, listen=True, stdin=0, stdout=1)
    with pytest.raises(NotFoundError):
        relay(tmp_path / "none", "nbd.sock", listen=False, stdin=0, stdout=1)


def _definition(*paths: Path) -> dict[str, object]:
    return {"guest": None, "disks": [{"path": str(p), "format": "qcow2"} for p in paths]}


def test_the_destination_makes_empty_disks_of_the_sources_size(tmp_path: Path) -> None:
    a, b = tmp_path / "a.qcow2", tmp_path / "b.img"
    plan = [{"node": "disk0", "path": str(a), "format": "qcow2", "size": 48 << 20},
            {"node": "disk1", "path": str(b), "format": "raw", "size": 5 << 20}]
    made: list[Path] = []
    mirror.create_disks("m", _definition(a, b), plan, made)
    assert made == [a, b]
    for path, fmt, size in ((a, "qcow2", 48 << 20), (b, "raw", 5 << 20)):
        info = json.loads(subprocess.run(["qemu-img", "info", "--output=json", str(path)],
                                         check=True, capture_output=True, text=True).stdout)
        assert (info["format"], info["virtual-size"]) == (fmt, size)


def test_the_destination_never_overwrites_and_names_the_disk(tmp_path: Path) -> None:
    a = tmp_path / "a.qcow2"
    a.write_bytes(b"somebody's")
    plan = [{"node": "disk0", "path": str(a), "format": "qcow2", "size": 1 << 20}]
    made: list[Path] = []
    with pytest.raises(StorageError, match=r"disk0 of 'm'.*exists on this server already"):
        mirror.create_disks("m", _definition(a), plan, made)
    assert made == [] and a.read_bytes() == b"somebody's"
    missing = tmp_path / "no" / "b.qcow2"
    plan = [{"node": "disk0", "path": str(missing), "format": "qcow2", "size": 1 << 20}]
    with pytest.raises(StorageError, match=r"directory .*/no does not exist"):
        mirror.create_disks("m", _definition(missing), plan, made)
    assert made == []


@pytest.mark.parametrize("entry", [
    {"node": "vda", "path": "/x", "format": "qcow2", "size": 1},
    {"node": "disk0", "path": "/x", "format": "vmdk", "size": 1},
    {"node": "disk0", "path": "/x", "format": "qcow2", "size": -1},
    {"node": "disk0", "path": "/x", "format": "qcow2", "size": "1"},
    "disk0",
])
def test_a_bad_disk_plan_is_refused(tmp_path: Path, entry: object) -> None:
    with pytest.raises(ConfigError):
        mirror.create_disks("m", _definition(tmp_path / "x"), [entry], [])


def test_a_disk_not_in_the_definition_is_refused(tmp_path: Path) -> None:
    plan = [{"node": "disk1", "path": "/x", "format": "qcow2", "size": 1 << 20}]
    with pytest.raises(ConfigError, match="not in the machine's definition"):
        mirror.create_disks("m", _definition(tmp_path / "a"), plan, [])


def test_read_only_media_must_be_on_the_destination(tmp_path: Path) -> None:
    iso = tmp_path / "x.iso"
    with pytest.raises(NotFoundError, match=r"cd .*x\.iso is not on this server"):
        mirror.check_media({"cd": str(iso)})
    iso.write_bytes(b"")
    mirror.check_media({"cd": str(iso), "kernel": None})


def test_a_remote_error_is_told_once_in_its_own_words() -> None:
    from vmanager.lab.migrate import _error_of
    printed = (b'{"mirror": "disk0", "done": 0, "total": 1}\n'
               b'{\n  "error": "a: mirroring disk /d.qcow2 (disk0) failed: EIO",\n'
               b'  "exit_code": 1,\n  "type": "QemuError"\n}\n')
    assert _error_of(printed) == "a: mirroring disk /d.qcow2 (disk0) failed: EIO"
    assert _error_of(b"ssh: connect to host: refused") == "ssh: connect to host: refused"
