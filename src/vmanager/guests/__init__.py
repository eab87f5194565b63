"""Guests vmanager can build for you (see :mod:`vmanager.guests.tiny`)."""

from vmanager.guests.tiny import READY_LINE, TinyGuest, tiny_guest

__all__ = ["READY_LINE", "TinyGuest", "tiny_guest"]
