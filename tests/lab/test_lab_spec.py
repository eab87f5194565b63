"""Lab files: what validates, and clear errors (file, line, field) for what does not."""

from __future__ import annotations

import html
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vmanager.errors import LabFileError
from vmanager.lab import load, mermaid, parse, svg

EXAMPLE = Path(__file__).parents[2] / "examples" / "demo-lab.toml"

GOOD = """\
[lab]
name = "t"

[switches.sw]
vlan_filtering = true

[machines.a]
guest = "tiny"
memory = "192M"
nics = [{ switch = "sw", vlan = 10 }]

[machines.b]
guest = "tiny"
disks = [{ path = "b.qcow2", size = "1G" }]

[[links]]
endpoints = ["b:0", "sw"]
vlan = 20
"""


def test_the_example_lab_parses_and_draws() -> None:
    lab = load(EXAMPLE)
    assert lab.name == "demo" and len(lab.machines) == 3
    assert {n.switch for m in lab.machines for n in m.nics} == {"demo-lan"}
    assert lab.routers[0].switch == "demo-lan"
    picture = html.unescape(svg(lab))  # Graphviz writes '-' as &#45;
    assert "<svg" in picture and all(m.name in picture for m in lab.machines)
    assert "n_demo_gw ---|lan| n_demo_lan" in mermaid(lab)


def test_a_good_file() -> None:
    lab = parse(GOOD, path="/labs/t.toml")
    a, b = lab.machines
    assert a.memory == 192 and a.nics[0].vlan == 10
    assert b.nics[0].switch == "sw" and b.nics[0].vlan == 20
    assert b.disks[0].path == "/labs/b.qcow2"


@pytest.mark.parametrize(("text", "line", "field", "words"), [
    ("[lab]\n", 1, "lab", "missing required key 'name'"),
    ('[lab]\nname = "t"\n[machines.a]\nguest = "tiny"\nmemroy = 5\n', 5,
     "machines.a.memroy", "unknown key 'memroy'"),
    ('[lab]\nname = "t"\n[machines.a]\nguest = "tiny"\nmemory = "lots"\n', 5,
     "machines.a.memory", "memory"),
    ('[lab]\nname = "t"\n[machines.a]\nguest = "tiny"\n'
     'disks = [{ path = "x", size = "12 parsecs" }]\n', 5, "machines.a.disks.0.size", "size"),
    ('[lab]\nname = "t"\n[machines.a]\nguest = "tiny"\nnics = [{ switch = "nope" }]\n', 5,
     "machines.a.nics.0.switch", "not defined"),
    ('[lab]\nname = "t"\n[switches.sw]\n[machines.a]\nguest = "tiny"\n\n[[links]]\n'
     'endpoints = ["ghost:0", "sw"]\n', 8, "links.0.endpoints", "ghost"),
    ('[lab]\nname = "t"\n[[links]]\nendpoints = ["x", "y"]\n', 4, "links.0.endpoints",
     "unknown endpoint"),
    ('[lab]\nname = "t"\n[machines.a]\nmemory = 64\n', 3, "machines.a", "nothing to boot"),
    ('[lab]\nname = "t"\n[routers.r]\ntrunk = "eth0"\nmode = "nat"\n', 3, "routers.r",
     "trunk_address"),
    ('[lab]\nname = "t"\n[routers.r]\ntrunk = "eth0"\nmode = "bridged"\nsubnet = "10.0.0.0/24"\n',
     6, "routers.r.subnet", "only applies"),
    ('[lab]\nname = "t"\n[routers.r]\ntrunk = "eth0"\ntrunk_address = "1.2.3.4/24"\n'
     'subnet = "10.0.0.1/24"\n', 6, "routers.r.subnet", "IPv4 network"),
    ('[lab]\nname = "t"\n[switches.x]\n[machines.x]\nguest = "tiny"\n', 4, "machines.x",
     "also used"),
    ('[lab]\nname = "../etc"\n', 2, "lab.name", "safe identifier"),
    ('[lab]\nname = "t"\n[machines.a]\nguest = "tiny"\ncpus = true\n', 5, "machines.a.cpus",
     "integer"),
    ('[lab]\nname = "t"\nstray = = 1\n', 3, "", "not valid TOML"),
])
def test_malformed_files_name_file_line_and_field(text: str, line: int, field: str,
                                                  words: str) -> None:
    with pytest.raises(LabFileError) as info:
        parse(text, path="/labs/bad.toml")
    err = info.value
    assert err.path == "/labs/bad.toml"
    assert err.line == line, str(err)
    assert (err.field or "") == field, str(err)
    assert words in str(err)
    assert str(err).startswith(f"/labs/bad.toml:{line}")


def test_a_missing_file() -> None:
    with pytest.raises(LabFileError, match=r"nope\.toml: cannot read"):
        load("/nonexistent/nope.toml")


_VALUES = st.one_of(st.integers(-5, 5000), st.text(max_size=8), st.booleans(),
                    st.just("10.0.0.0/24"), st.just("1G"), st.just("sw"))
_KEYS = st.sampled_from(["memory", "cpus", "guest", "nics", "disks", "switch", "mode",
                         "trunk", "subnet", "vlan", "bogus", "kernel", "cd"])


def _toml(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["machines.a", "switches.sw", "routers.r",
                                           "hosts.h", "links"]),
                          st.dictionaries(_KEYS, _VALUES, max_size=4)), max_size=4))
def test_any_file_validates_or_raises_lab_file_error(tables: list[tuple[str, dict[str, object]]]
                                                     ) -> None:
    parts = ['[lab]\nname = "fuzz"\n']
    for table, body in tables:
        header = "[[links]]" if table == "links" else f"[{table}]"
        parts.append(header + "\n" + "".join(f"{k} = {_toml(v)}\n" for k, v in body.items()))
    try:
        parse("\n".join(parts), path="fuzz.toml")
    except LabFileError as exc:
        assert str(exc).startswith("fuzz.toml")
