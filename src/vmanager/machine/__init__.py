"""The Machine and its lifecycle states."""

from vmanager.machine.base import State
from vmanager.machine.machine import Machine
from vmanager.qemu.chardev import Console, ExecResult

__all__ = ["Console", "ExecResult", "Machine", "State"]
