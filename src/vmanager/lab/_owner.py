"""Which lab made a kernel object: a marker the object itself carries.

A name says nothing about who made an object: a lab's machine ``web`` and
somebody's namespace ``web`` look alike. Every link a lab makes gets the
interface alias ``vmanager-lab:<lab>``, and every namespace it makes gets the
same alias on its ``lo``. A lab removes or reuses an existing object only if
it carries the lab's own marker, and refuses (naming the object) otherwise.
"""

from __future__ import annotations

from vmanager.errors import ConfigError
from vmanager.net.labels import link_alias, set_link_alias

PREFIX = "vmanager-lab:"


def marker(lab: str) -> str:
    return PREFIX + lab


def mark_link(lab: str, ifname: str, netns: str | None = None) -> None:
    """Label ``ifname`` (in ``netns``) as made by ``lab``."""
    set_link_alias(ifname, marker(lab), netns)


def mark_namespace(lab: str, netns: str) -> None:
    """Label namespace ``netns`` (its ``lo``) as made by ``lab``."""
    mark_link(lab, "lo", netns)


def link_owner(ifname: str, netns: str | None = None) -> str | None:
    """The lab that made ``ifname``; ``""`` if not a lab's; ``None`` if there is no such link."""
    alias = link_alias(ifname, netns)
    if alias is None:
        return None
    return alias[len(PREFIX):] if alias.startswith(PREFIX) else ""


def namespace_owner(netns: str) -> str | None:
    """The lab that made namespace ``netns``; ``""`` if not a lab's; ``None`` if absent."""
    from vmanager.net.adopt import namespace_exists
    if not namespace_exists(netns):
        return None
    return link_owner("lo", netns) or ""


def require_ours(lab: str, *, netns: str | None = None, link: str | None = None) -> bool:
    """Whether the object exists (and is ``lab``'s); ConfigError if it is somebody else's."""
    if link is not None:
        owner, what = link_owner(link), f"interface {link!r}"
    else:
        assert netns is not None
        owner, what = namespace_owner(netns), f"network namespace {netns!r}"
    if owner is None:
        return False
    if owner != lab:
        made = f"lab {owner!r}" if owner else "something other than a vmanager lab"
        raise ConfigError(f"{what} exists and was made by {made}, not by lab {lab!r}; "
                          "refusing to take it over or remove it")
    return True
