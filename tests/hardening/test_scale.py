"""Bad input at scale: many generated inputs per public boundary, with fakes.

Every boundary here takes data vmanager does not control: lab files (hostile
ones included), values checked by ``validate``, the guest's replies on the
shell channel and its console bytes, and QEMU's QMP replies (through a fake
peer). The outcome is always a result or a VmanagerError with a message: never
another exception, a hang, or a path outside the lab's directory.

The developer's run uses ``VMANAGER_PROPERTY_EXAMPLES`` (default 100) examples
per test; ``.ci/run`` runs this module again, after the main suite, with
10,000 (marker ``scale``).
"""

from __future__ import annotations

import base64
import json
import os
import re
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vmanager import validate
from vmanager.errors import GuestCommandError, LabFileError, QemuError, VmanagerError
from vmanager.lab import spec
from vmanager.qemu.chardev import Console, Shell
from vmanager.qemu.qmp import Monitor

pytestmark = pytest.mark.scale

EXAMPLES = int(os.environ.get("VMANAGER_PROPERTY_EXAMPLES", "100"))
SCALE = settings(max_examples=EXAMPLES, deadline=None, database=None,
                 suppress_health_check=list(HealthCheck))

hostile_text = st.one_of(
    st.text(max_size=40),
    st.text(alphabet="ab./-_\x00\n\"'\\[]{}=é ", max_size=30),
    st.sampled_from(["..", "../../etc/shadow", "/etc/passwd", "/dev/sda", "~root", "a" * 300,
                     "\udcff", "${HOME}", "$(reboot)", "`id`", "lo", "eth0", "-rf"]),
)
scalars = st.one_of(hostile_text, st.integers(min_value=-2**70, max_value=2**70), st.booleans(),
                    st.floats(allow_nan=True), st.none())


# -- validate.py ---------------------------------------------------------------------
@SCALE
@given(value=st.one_of(scalars, st.binary(max_size=12), st.lists(st.integers(), max_size=3)),
       check=st.sampled_from(["name", "ifname", "size", "memory_mib", "mac", "path"]))
def test_validate_accepts_or_explains(value: object, check: str) -> None:
    try:
        result = getattr(validate, check)(value)
    except VmanagerError as exc:
        assert str(exc)
        return
    if check in ("name", "ifname"):
        assert isinstance(result, str) and "/" not in result and result not in (".", "..")


# -- lab files -----------------------------------------------------------------------
def _toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return repr(value) if value == value and abs(value) != float("inf") else "nan"
    if value is None:
        return '""'
    return json.dumps(str(value), ensure_ascii=True)


keys = st.sampled_from(["guest", "kernel", "initrd", "append", "memory", "cpus", "accel",
                        "disks", "cd", "nics", "mode", "trunk", "switch", "subnet", "port",
                        "address", "vlan", "vlans", "vlan_filtering", "trunk_address",
                        "gateway", "dhcp", "dns", "force_trunk", "endpoints", "bogus"])
sections = st.sampled_from(["machines", "switches", "routers", "hosts"])


@st.composite
def lab_files(draw: st.DrawFn) -> str:
    lines = ["[lab]", f"name = {_toml_value(draw(st.one_of(st.just('l1'), hostile_text)))}"]
    if draw(st.booleans()):
        lines.append(f"allow_paths = [{_toml_value(draw(hostile_text))}]")
    for _ in range(draw(st.integers(0, 4))):
        name = draw(st.one_of(st.sampled_from(["a", "sw", "gw", "out"]),
                              st.from_regex(r"[a-z][a-z0-9]{0,15}", fullmatch=True)))
        lines.append(f"[{draw(sections)}.{name}]")
        for _ in range(draw(st.integers(0, 5))):
            key = draw(keys)
            value = draw(st.one_of(
                scalars.map(_toml_value),
                st.lists(scalars.map(_toml_value), max_size=3).map(
                    lambda xs: "[" + ", ".join(xs) + "]"),
                st.sampled_from(['[{ switch = "sw", vlan = 10 }]', '[{ switch = "sw" }]',
                                 '["/etc/shadow"]', '[{ path = "../x.qcow2", size = "1G" }]',
                                 '"tiny"', '"/proc/self/mem"', '"nat"'])))
            lines.append(f"{key} = {value}")
    if draw(st.booleans()):
        lines.append(draw(st.text(max_size=30)))  # trailing garbage
    return "\n".join(lines) + "\n"


@pytest.fixture(scope="module")
def lab_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("labs")


@SCALE
@given(source=lab_files())
def test_hostile_lab_files_parse_or_explain(lab_dir: Path, source: str) -> None:
    path = lab_dir / "lab.toml"
    try:
        lab = spec.parse(source, path=path)
    except VmanagerError as exc:
        assert str(exc)
        assert isinstance(exc, (LabFileError, VmanagerError))
        return
    allowed = 'allow_paths' in source
    for m in lab.machines:
        for p in [m.kernel, m.initrd, m.cd, *(d.path for d in m.disks)]:
            if p is not None and not allowed:
                assert Path(p).is_relative_to(lab_dir.resolve()), f"{p} escapes the lab"


@SCALE
@given(source=st.text(max_size=200))
def test_arbitrary_text_as_a_lab_file(lab_dir: Path, source: str) -> None:
    try:
        spec.parse(source, path=lab_dir / "x.toml")
    except VmanagerError as exc:
        assert str(exc)


# -- the guest's shell channel and console --------------------------------------------
class _Guest:
    """Answers each command line read from the channel with a generated reply."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.reply = b""
        self.buf = b""

    def answer_next(self) -> None:
        self.buf = self.buf.lstrip(b"\n")  # each command starts with a newline
        while b"\n" not in self.buf:
            self.buf += self.sock.recv(65536)
            self.buf = self.buf.lstrip(b"\n")
        line, self.buf = self.buf.split(b"\n", 1)
        ident = line.split(b" ", 1)[0]
        self.sock.sendall(self.reply.replace(b"{id}", ident))


@pytest.fixture(scope="module")
def channel() -> Iterator[tuple[Shell, _Guest]]:
    ours, theirs = socket.socketpair()
    console = Console("fake/shell", history_limit=256 * 1024)
    console.attach(ours)
    guest = _Guest(theirs)
    yield Shell(console, expect_hello=False), guest
    console.close()
    theirs.close()


b64 = st.binary(max_size=64).map(lambda b: base64.b64encode(b))
def _no_space(b: bytes) -> bool:
    return not re.search(r"\s", b.decode(errors="replace"))


# a field with white space would make the reply unrecognisable: a timeout, not a parse
fields = st.one_of(b64, st.binary(max_size=40).filter(_no_space),
                   st.sampled_from([b"", b"=", b"QQ", b"not*base64", b"9" * 5000, b"-1",
                                    b"\xff\xfe", b"256", b"0"]))


@SCALE
@given(status=fields, out=fields, err=fields, noise=st.binary(max_size=40))
def test_hostile_shell_replies_are_results_or_guest_command_errors(
        channel: tuple[Shell, _Guest], status: bytes, out: bytes, err: bytes,
        noise: bytes) -> None:
    shell, guest = channel
    noise = noise.replace(b"\n", b" ")
    guest.reply = noise + b"\n@@vmresp {id} " + status + b" O" + out + b" E" + err + b"\n"
    responder = threading.Thread(target=guest.answer_next, daemon=True)
    responder.start()
    well_formed = re.fullmatch(rb"[0-9]{1,3}", status) and int(status) <= 255
    try:
        result = shell.execute("true", timeout=10)
    except GuestCommandError as exc:
        assert str(exc) and "no answer" not in str(exc)
        return
    finally:
        responder.join(10)
    assert well_formed and 0 <= result.status <= 255


@SCALE
@given(chunks=st.lists(st.binary(max_size=300), max_size=6))
def test_console_text_after_any_bytes_is_found(chunks: list[bytes]) -> None:
    ours, theirs = socket.socketpair()
    console = Console("fake/serial0", history_limit=4096)
    console.attach(ours)
    try:
        for chunk in chunks:
            theirs.sendall(chunk)
        theirs.sendall(b"\n@@end-mark@@\n")
        console.wait_for("@@end-mark@@", timeout=10)
        assert console.offset == sum(map(len, chunks)) + 14
    finally:
        console.close()
        theirs.close()


# -- QMP replies through a fake peer ----------------------------------------------------
GREETING = {"QMP": {"version": {"qemu": {"micro": 0, "minor": 2, "major": 7}, "package": ""},
                    "capabilities": []}}

json_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(min_value=-2**64, max_value=2**64),
              st.floats(allow_nan=False), st.text(max_size=20)),
    lambda inner: st.one_of(st.lists(inner, max_size=4),
                            st.dictionaries(st.text(max_size=8), inner, max_size=4)),
    max_leaves=12)
replies = st.one_of(
    st.fixed_dictionaries({"return": json_values}),
    st.fixed_dictionaries({"error": st.one_of(
        json_values, st.fixed_dictionaries({"class": st.text(max_size=10),
                                            "desc": st.text(max_size=30)}))}),
    st.dictionaries(st.text(max_size=8), json_values, max_size=3),
    st.fixed_dictionaries({"event": st.text(max_size=12), "data": json_values}),
)


class _FakeQemu(threading.Thread):
    def __init__(self, sock: socket.socket, reply: dict[str, Any] | None) -> None:
        super().__init__(daemon=True)
        self.sock, self.reply = sock, reply

    def send(self, obj: object) -> None:
        self.sock.sendall(json.dumps(obj).encode() + b"\r\n")

    def run(self) -> None:
        # QMP clients need not end messages with a newline: decode a JSON stream
        decoder, buf = json.JSONDecoder(), ""
        try:
            self.send(GREETING)
            while chunk := self.sock.recv(65536):
                buf += chunk.decode()
                while buf.strip():
                    try:
                        msg, end = decoder.raw_decode(buf.lstrip())
                    except ValueError:
                        break
                    buf = buf.lstrip()[end:]
                    self.answer(msg)
        except OSError:
            return

    def answer(self, msg: dict[str, Any]) -> None:
        ident = msg.get("id")
        if msg.get("execute") == "qmp_capabilities":
            self.send({"return": {}, "id": ident})
            return
        reply = dict(self.reply or {})
        if "event" in reply:  # an event, then a real answer so the call ends
            self.send(reply)
            self.send({"return": {}, "id": ident})
        else:
            self.send({**reply, "id": ident})


@SCALE
@given(reply=replies)
def test_hostile_qmp_replies_are_results_or_vmanager_errors(reply: dict[str, Any]) -> None:
    ours, theirs = socket.socketpair()
    peer = _FakeQemu(theirs, reply)
    peer.start()
    mon = Monitor("fake")
    try:
        mon.connect(ours, timeout=5)
        try:
            mon.execute("query-status", timeout=5)
        except (VmanagerError, QemuError) as exc:
            assert str(exc)
    finally:
        mon.close()
        ours.close()
        theirs.close()
        peer.join(5)
