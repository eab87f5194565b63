"""Which keys a US keyboard presses for each printable ASCII character."""

from __future__ import annotations

import string

from vmanager.errors import ConfigError

_UNSHIFTED = {
    " ": "spc", "\n": "ret", "\t": "tab", "-": "minus", "=": "equal", "[": "bracket_left",
    "]": "bracket_right", "\\": "backslash", ";": "semicolon", "'": "apostrophe",
    "`": "grave_accent", ",": "comma", ".": "dot", "/": "slash",
}
_SHIFTED = {
    "!": "1", "@": "2", "#": "3", "$": "4", "%": "5", "^": "6", "&": "7", "*": "8", "(": "9",
    ")": "0", "_": "minus", "+": "equal", "{": "bracket_left", "}": "bracket_right",
    "|": "backslash", ":": "semicolon", '"': "apostrophe", "~": "grave_accent", "<": "comma",
    ">": "dot", "?": "slash",
}


def _build() -> dict[str, tuple[str, ...]]:
    table: dict[str, tuple[str, ...]] = {}
    for ch in string.ascii_lowercase + string.digits:
        table[ch] = (ch,)
    for ch in string.ascii_uppercase:
        table[ch] = ("shift", ch.lower())
    for ch, key in _UNSHIFTED.items():
        table[ch] = (key,)
    for ch, key in _SHIFTED.items():
        table[ch] = ("shift", key)
    table["\r"] = ("ret",)
    return table


#: Character -> QKeyCodes pressed together (modifier first) on a US layout.
US_KEYMAP: dict[str, tuple[str, ...]] = _build()


def keys_for_text(text: str) -> list[tuple[str, ...]]:
    """The key presses that type ``text`` on a US layout, one tuple per character.

    Printable ASCII, newline, carriage return (both Enter) and tab are typeable.
    Raises :class:`ConfigError` naming every character that is not, before
    anything is typed.
    """
    unknown = sorted({ch for ch in text if ch not in US_KEYMAP})
    if unknown:
        shown = ", ".join(repr(ch) for ch in unknown)
        raise ConfigError(f"cannot type {shown}: type_text takes printable ASCII, newline "
                          "and tab on a US layout (use send_key for other keys)")
    return [US_KEYMAP[ch] for ch in text]
