"""Input validation: every bad value gives a ConfigError naming it."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from vmanager import validate
from vmanager.errors import ConfigError, VmanagerError
from vmanager.screen import keys


@pytest.mark.parametrize("bad", ["", "../etc", "a/b", "-x", ".", "..", "a b", "x" * 33, "é"])
def test_bad_names_are_refused_with_the_name_in_the_message(bad: str) -> None:
    with pytest.raises(ConfigError) as info:
        validate.name(bad, what="machine name")
    assert "machine name" in str(info.value)


def test_ifname_limit_is_the_kernels() -> None:
    assert validate.ifname("a" * 15) == "a" * 15
    with pytest.raises(ConfigError, match="15 bytes"):
        validate.ifname("a" * 16)


@pytest.mark.parametrize("bad", ["\udcff", "a\udcffb", "é" * 8])
def test_an_unencodable_or_non_ascii_ifname_is_a_config_error(bad: str) -> None:
    # a lone surrogate (an undecodable file name byte) raised UnicodeEncodeError
    with pytest.raises(ConfigError, match="characters"):
        validate.ifname(bad, what="port name")


@pytest.mark.parametrize(("text", "expected"), [
    ("1G", 1 << 30), ("512M", 512 << 20), ("1.5GiB", 3 << 29), (4096, 4096), ("10 k", 10240)])
def test_sizes_parse(text: str | int, expected: int) -> None:
    assert validate.size(text) == expected


@pytest.mark.parametrize("bad", ["", "ten", "-1G", "0", "1X", True, None, 1.5, "1e3G"])
def test_bad_sizes(bad: object) -> None:
    with pytest.raises(ConfigError):
        validate.size(bad)


def test_memory_is_mib_for_bare_ints_like_the_seed() -> None:
    assert validate.memory_mib(512) == 512
    assert validate.memory_mib("1G") == 1024
    with pytest.raises(ConfigError, match="too small"):
        validate.memory_mib(8)


def test_mac_addresses() -> None:
    assert validate.mac("52:54:00:AA:bb:01") == "52:54:00:aa:bb:01"
    with pytest.raises(ConfigError, match="multicast"):
        validate.mac("01:00:5e:00:00:01")
    with pytest.raises(ConfigError):
        validate.mac("52:54:00:aa:bb")


@given(st.text(max_size=40))
def test_any_name_is_either_valid_or_a_config_error(text: str) -> None:
    try:
        out = validate.name(text)
    except ConfigError:
        return
    assert out == text and "/" not in out and not out.startswith(("-", "."))


@given(st.one_of(st.text(max_size=12), st.integers(), st.floats(), st.none()))
def test_any_size_is_either_positive_or_a_config_error(value: object) -> None:
    try:
        assert validate.size(value) > 0
    except VmanagerError as exc:
        assert isinstance(exc, ConfigError)


def test_key_combinations() -> None:
    assert keys.parse_combo("ctrl-alt-f2") == ["ctrl", "alt", "f2"]
    assert keys.parse_combo("ctrl-alt-delete") == ["ctrl", "alt", "delete"]
    assert keys.parse_combo("Enter") == ["ret"]
    with pytest.raises(ConfigError, match=r"valid key names are:.*ctrl"):
        keys.parse_combo("ctrl-nosuchkey")
