"""Key names, in one place: QEMU's ``QKeyCode`` names, combinations, and typing text.

``parse_combo("ctrl-alt-f2")`` gives the QKeyCodes to press together;
``keys_for_text("Hi\n")`` the presses that type text on a US layout. Sending
them is :class:`vmanager.machine.input.Input`'s job (QMP ``send-key``).
"""

from __future__ import annotations

import string

from vmanager.errors import ConfigError

_QKEYCODE_TEXT = """
unmapped shift shift_r alt alt_r ctrl ctrl_r menu esc 1 2 3 4 5 6 7 8 9 0 minus equal
backspace tab q w e r t y u i o p bracket_left bracket_right ret a s d f g h j k l
semicolon apostrophe grave_accent backslash z x c v b n m comma dot slash asterisk spc
caps_lock f1 f2 f3 f4 f5 f6 f7 f8 f9 f10 num_lock scroll_lock kp_divide kp_multiply
kp_subtract kp_add kp_enter kp_decimal sysrq kp_0 kp_1 kp_2 kp_3 kp_4 kp_5 kp_6 kp_7 kp_8
kp_9 less f11 f12 print home pgup pgdn end left up down right insert delete stop again
props undo front copy open paste find cut lf help meta_l meta_r compose pause ro hiragana
henkan yen muhenkan katakanahiragana kp_comma kp_equals power sleep wake audionext
audioprev audiostop audioplay audiomute volumeup volumedown mediaselect mail calculator
computer ac_home ac_back ac_forward ac_refresh ac_bookmarks lang1 lang2
"""
QKEYCODES: frozenset[str] = frozenset(_QKEYCODE_TEXT.split())

#: Friendly names people type, as in QEMU's HMP ``sendkey``.
ALIASES: dict[str, str] = {
    "enter": "ret", "return": "ret", "space": "spc", "escape": "esc", "del": "delete",
    "ins": "insert", "pageup": "pgup", "pagedown": "pgdn", "page_up": "pgup",
    "page_down": "pgdn", "control": "ctrl", "super": "meta_l", "win": "meta_l",
    "meta": "meta_l", "altgr": "alt_r", "backtab": "tab", "bksp": "backspace",
    "printscreen": "print", "capslock": "caps_lock", "period": "dot",
}


def key_name(name: str) -> str:
    """The QKeyCode for one key name; raises ConfigError listing the valid names."""
    lowered = name.strip().lower()
    lowered = ALIASES.get(lowered, lowered)
    if lowered in QKEYCODES:
        return lowered
    valid = ", ".join(sorted(QKEYCODES | set(ALIASES)))
    raise ConfigError(f"unknown key name {name!r}; valid key names are: {valid}")


def parse_combo(combo: str) -> list[str]:
    """Split ``"ctrl-alt-f2"`` into QKeyCodes (``-`` joins keys; ``minus`` is the key)."""
    if not combo or not combo.strip():
        raise ConfigError("an empty key combination was given")
    parts = combo.strip().split("-")
    # "ctrl--" or a trailing "-" means the minus key itself.
    keys: list[str] = []
    i = 0
    while i < len(parts):
        part = parts[i]
        if part == "" and i + 1 < len(parts) and parts[i + 1] == "":
            keys.append("minus")
            i += 2
            continue
        if part == "":
            raise ConfigError(f"key combination {combo!r} has an empty key name")
        keys.append(key_name(part))
        i += 1
    return keys


# -- typing text on a US layout -------------------------------------------------------
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
