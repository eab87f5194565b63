"""``vmanager exec NAME [options] [--] CMD``: options after NAME are vmanager's."""

from __future__ import annotations

import argparse

import pytest

from vmanager.cli import machines
from vmanager.cli.main import build_parser
from vmanager.errors import ConfigError


def parse(*argv: str) -> argparse.Namespace:
    args = build_parser().parse_args(["exec", *argv])
    machines.exec_args_ok(args, ["exec", *argv])
    return args


def test_options_after_the_name_are_vmanagers_not_the_guests() -> None:
    args = parse("web", "--timeout", "7", "--json", "--", "echo", "-n", "hi")
    assert args.timeout == 7.0 and args.json
    assert args.cmd == ["echo", "-n", "hi"]
    args = parse("web", "--timeout=9", "-q", "uname", "-a")
    assert args.timeout == 9.0 and args.quiet and args.cmd == ["uname", "-a"]


def test_the_command_is_kept_verbatim_after_its_first_word() -> None:
    assert parse("web", "echo", "--", "--timeout", "3").cmd == ["echo", "--", "--timeout", "3"]
    assert parse("web", "--", "--timeout", "3").cmd == ["--timeout", "3"]
    assert parse("web", "--", "--", "x").cmd == ["--", "x"]
    assert parse("--timeout", "4", "web", "true").timeout == 4.0
    assert parse("web", "true").timeout == 60.0  # exec's own default


def test_an_unknown_option_or_no_command_is_a_clear_error() -> None:
    with pytest.raises(ConfigError, match=r"unknown option '-x'.*after '--'"):
        parse("web", "-x", "ls")
    with pytest.raises(ConfigError, match="needs a value"):
        parse("web", "--timeout")
    with pytest.raises(ConfigError, match="needs a command"):
        parse("web", "--timeout", "3", "--")
