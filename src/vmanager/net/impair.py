"""Link impairment with the kernel's netem qdisc: delay, jitter, loss, rate, corruption...

An :class:`Impairment` is the root qdisc of one interface, set through netlink
(pyroute2; no ``tc`` process). It shapes what the interface **sends**
(egress). :meth:`VirtualNic.impair <vmanager.net.VirtualNic.impair>` puts it on
the NIC's sink, the veth end beside the machine, so it applies to the frames
the machine sends through that NIC; impair both ends of a link for a
symmetrical one. A ping's round trip grows by the delay once.

Values are given as a user would to ``tc``: times as ``"40ms"``, ``"1.5s"``,
``"250us"`` (a bare number is milliseconds), probabilities as ``"1%"`` or a
number of percent, rates as ``"10mbit"``, ``"1gbit"``, ``"500kbit"``,
``"125kbps"`` (bytes per second, as ``tc`` reads ``bps``) or a bare number of
bits per second.

The kernel needs ``sch_netem`` (``CONFIG_NET_SCH_NETEM``). Where it is missing,
:func:`apply` raises :class:`~vmanager.errors.HostError` saying so, except for an
impairment that is only a rate: that is done with the token bucket filter
(``sch_tbf``) instead.
"""

from __future__ import annotations

import errno
import math
import re
from dataclasses import dataclass, fields
from typing import Any

from pyroute2.netlink.exceptions import NetlinkError

from vmanager.errors import ConfigError, HostError
from vmanager.net._netlink import kernel_call, require, rtnl

#: ``TC_H_ROOT``: the root qdisc of an interface.
ROOT = 0xFFFFFFFF
HANDLE = 0x10000  # "1:"
#: Longest delay or jitter accepted (netem's own bound is about 4295 s).
MAX_TIME_US = 60 * 1_000_000
#: Highest rate netem's 32-bit ``rate`` field holds, in bits per second.
MAX_RATE_BIT = (2**32 - 1) * 8
#: netem's default queue (packets); large delays at high rates need a longer one.
LIMIT = 10000

_TIME = {"us": 1, "usec": 1, "ms": 1000, "msec": 1000, "s": 1_000_000, "sec": 1_000_000}
_RATE = {"bit": 1, "kbit": 1000, "mbit": 10**6, "gbit": 10**9,
         "bps": 8, "kbps": 8000, "mbps": 8 * 10**6, "gbps": 8 * 10**9}
_NUMBER = re.compile(r"^\s*([0-9]+(?:\.[0-9]*)?|\.[0-9]+)\s*([a-zA-Z%]*)\s*$")
_PERCENT_FIELDS = ("loss", "corrupt", "duplicate", "reorder")


@dataclass(frozen=True)
class Impairment:
    """What netem does to an interface's outgoing frames.

    Times in microseconds, probabilities in percent, rate in bits per second;
    0 means "not impaired that way". Build one from user values with
    :func:`impairment`; :meth:`describe` gives ``tc``-like text.
    """

    delay_us: int = 0
    jitter_us: int = 0
    loss: float = 0.0
    rate_bit: int = 0
    corrupt: float = 0.0
    duplicate: float = 0.0
    reorder: float = 0.0

    def __bool__(self) -> bool:
        return any(getattr(self, f.name) for f in fields(self))

    def as_dict(self) -> dict[str, Any]:
        """Numbers under their field names plus the text form, for JSON."""
        out: dict[str, Any] = {f.name: getattr(self, f.name) for f in fields(self)}
        out["text"] = self.describe()
        return out

    def describe(self) -> str:
        """``delay 40ms jitter 5ms loss 1% rate 10mbit`` (empty when unimpaired)."""
        parts = []
        if self.delay_us:
            parts.append(f"delay {_time_text(self.delay_us)}")
        if self.jitter_us:
            parts.append(f"jitter {_time_text(self.jitter_us)}")
        for name in _PERCENT_FIELDS:
            value = getattr(self, name)
            if value:
                parts.append(f"{name} {value:g}%")
        if self.rate_bit:
            parts.append(f"rate {_rate_text(self.rate_bit)}")
        return " ".join(parts)

    def only_rate(self) -> bool:
        """Whether the rate is the only thing set (a token bucket can do that)."""
        return bool(self.rate_bit) and Impairment(rate_bit=self.rate_bit) == self


def impairment(*, delay: object = None, jitter: object = None, loss: object = None,
               rate: object = None, corrupt: object = None, duplicate: object = None,
               reorder: object = None) -> Impairment:
    """Validate user values (``"40ms"``, ``"1%"``, ``"10mbit"``) into an :class:`Impairment`.

    Raises:
        ConfigError: a value that does not parse or is out of range; the message
            names the field (``loss: 120% is more than 100%``).

    >>> impairment(delay="40ms", loss="1%").describe()
    'delay 40ms loss 1%'
    """
    out = Impairment(
        delay_us=_time("delay", delay), jitter_us=_time("jitter", jitter),
        loss=_percent("loss", loss), rate_bit=_rate("rate", rate),
        corrupt=_percent("corrupt", corrupt), duplicate=_percent("duplicate", duplicate),
        reorder=_percent("reorder", reorder))
    if out.jitter_us and not out.delay_us:
        raise ConfigError("jitter: needs a delay to vary around (give delay too)")
    if out.jitter_us > out.delay_us:
        raise ConfigError(f"jitter: {_time_text(out.jitter_us)} is more than the delay "
                          f"({_time_text(out.delay_us)}); netem would clip it")
    if out.reorder and not out.delay_us:
        raise ConfigError("reorder: needs a delay (reordered frames skip it, the rest wait)")
    return out


def from_mapping(values: dict[str, Any]) -> Impairment:
    """:func:`impairment` from a mapping such as a lab file's ``impair`` table.

    Raises:
        ConfigError: an unknown key (naming the allowed ones) or a bad value.
    """
    allowed = ("delay", "jitter", "loss", "rate", "corrupt", "duplicate", "reorder")
    for key in values:
        if key not in allowed:
            raise ConfigError(f"{key}: unknown impairment; allowed: {', '.join(allowed)}")
    return impairment(**values)


def apply(ifname: str, netns: str | None, imp: Impairment) -> None:
    """Make ``imp`` the root qdisc of ``ifname`` (replacing ours); clear when empty.

    Raises:
        HostError: the kernel lacks ``sch_netem`` (and the impairment is more than a rate).
        NotFoundError: no such interface or namespace.
        LinkError: the kernel refused otherwise.
    """
    if not imp:
        clear(ifname, netns)
        return
    with rtnl(netns) as ipr:
        index = require(ipr, ifname, netns)
        root = _root(ipr, index)
        if root is not None and root[0] != "netem":
            # the kernel changes a qdisc's parameters, never its kind (EINVAL)
            _delete_root(ipr, ifname, netns, index)
        try:
            ipr.tc("replace", kind="netem", index=index, handle=HANDLE, **_netem_args(imp))
            return
        except NetlinkError as exc:
            if exc.code not in (errno.ENOENT, errno.EOPNOTSUPP):
                with kernel_call("set netem qdisc", ifname, netns):
                    raise
            if not imp.only_rate():
                raise HostError(
                    f"cannot impair {ifname!r} ({imp.describe()}): this kernel has no netem "
                    "qdisc (sch_netem, CONFIG_NET_SCH_NETEM); load the module or use a "
                    "kernel built with it. A rate alone works without it (sch_tbf).") from exc
        with kernel_call("set tbf qdisc", ifname, netns):
            ipr.tc("replace", kind="tbf", index=index, handle=HANDLE, **_tbf_args(imp))


def clear(ifname: str, netns: str | None) -> None:
    """Remove an impairment (a netem or tbf root qdisc) from ``ifname``; none is fine."""
    with rtnl(netns) as ipr:
        index = require(ipr, ifname, netns)
        if _root(ipr, index) is not None:
            _delete_root(ipr, ifname, netns, index)


def _delete_root(ipr: Any, ifname: str, netns: str | None, index: int) -> None:
    try:
        ipr.tc("del", index=index, handle=HANDLE, parent=ROOT)
    except NetlinkError as exc:
        if exc.code in (errno.ENOENT, errno.EINVAL):
            return  # gone meanwhile
        with kernel_call("delete qdisc", ifname, netns):
            raise


def read(ifname: str, netns: str | None) -> Impairment:
    """The impairment the kernel applies to ``ifname`` (empty when none)."""
    with rtnl(netns) as ipr:
        index = require(ipr, ifname, netns)
        root = _root(ipr, index)
    if root is None:
        return Impairment()
    kind, opts = root
    if kind == "tbf":
        parms = opts.get_attr("TCA_TBF_PARMS") if opts is not None else None
        rate = int(parms["rate"]) * 8 if parms else 0
        return Impairment(rate_bit=rate)
    return _decode_netem(opts)


def _root(ipr: Any, index: int) -> tuple[str, Any] | None:
    """The root qdisc of ``index`` if it is an impairment of ours (netem or tbf)."""
    for msg in ipr.get_qdiscs(index=index):
        if msg["parent"] == ROOT and msg["handle"] == HANDLE:
            kind = str(msg.get_attr("TCA_KIND"))
            if kind in ("netem", "tbf"):
                return kind, msg.get_attr("TCA_OPTIONS")
    return None


def _drop_rate_key(request: dict[str, Any]) -> None:
    request.pop("rate", None)


def _patch_netem_plugin() -> None:
    """Let pyroute2's netem plugin take ``rate`` (its tbf and htb plugins do the same).

    pyroute2 builds netem's options from the request's keys, then would also
    send ``rate`` as the qdisc's ``TCA_RATE`` attribute, which fails to encode.
    Its tbf/htb plugins drop the key with a ``fix_request`` hook; netem's lacks one.
    """
    from pyroute2.netlink.rtnl.tcmsg import plugins
    netem = plugins.get("netem")
    if netem is not None and not hasattr(netem, "fix_request"):
        netem.fix_request = _drop_rate_key


def _netem_args(imp: Impairment) -> dict[str, Any]:
    _patch_netem_plugin()
    args: dict[str, Any] = {"limit": LIMIT, "delay": imp.delay_us, "jitter": imp.jitter_us,
                            "loss": imp.loss, "duplicate": imp.duplicate}
    if imp.corrupt:
        args["prob_corrupt"] = imp.corrupt
    if imp.reorder:
        args["prob_reorder"] = imp.reorder
    if imp.rate_bit:
        args["rate"] = max(1, imp.rate_bit // 8)  # bytes per second
    return args


def _tbf_args(imp: Impairment) -> dict[str, Any]:
    byte_rate = imp.rate_bit // 8
    # a burst of at least one jumbo frame, or 10 ms worth at the rate
    burst = max(9300, byte_rate // 100)
    return {"rate": max(1, byte_rate), "burst": burst, "latency": 50_000}


def _decode_netem(opts: Any) -> Impairment:
    from pyroute2.netlink.rtnl.tcmsg.common import tick_in_usec
    if opts is None:
        return Impairment()

    def pct(value: Any) -> float:
        return round(int(value or 0) * 100 / (2**32 - 1), 4)

    def usec(ticks: Any) -> int:
        return round(int(ticks or 0) / float(tick_in_usec))

    corrupt = opts.get_attr("TCA_NETEM_CORRUPT")
    reorder = opts.get_attr("TCA_NETEM_REORDER")
    rate = opts.get_attr("TCA_NETEM_RATE")
    return Impairment(
        delay_us=usec(opts["delay"]), jitter_us=usec(opts["jitter"]), loss=pct(opts["loss"]),
        rate_bit=int(rate["rate"]) * 8 if rate else 0,
        corrupt=pct(corrupt["prob_corrupt"]) if corrupt else 0.0,
        duplicate=pct(opts["duplicate"]),
        reorder=pct(reorder["prob_reorder"]) if reorder else 0.0)


def _split(field: str, value: object, units: dict[str, int], default: str,
           example: str) -> tuple[float, int]:
    if isinstance(value, bool):
        raise ConfigError(f"{field}: must be a value such as {example!r}, not {value!r}")
    if isinstance(value, (int, float)):
        number, unit = float(value), default
    elif isinstance(value, str):
        found = _NUMBER.match(value)
        if not found:
            raise ConfigError(f"{field}: {value!r} is not a value such as {example!r}")
        number, unit = float(found.group(1)), found.group(2).lower() or default
    else:
        raise ConfigError(f"{field}: must be a value such as {example!r}, not "
                          f"{type(value).__name__}")
    if not math.isfinite(number) or number < 0:
        raise ConfigError(f"{field}: {value!r} must be a non-negative number")
    if unit not in units:
        raise ConfigError(f"{field}: unknown unit {unit!r} in {value!r}; use "
                          f"{', '.join(units)}")
    return number, units[unit]


def _time(field: str, value: object) -> int:
    if value is None:
        return 0
    number, scale = _split(field, value, _TIME, "ms", "40ms")
    us = round(number * scale)
    if us > MAX_TIME_US:
        raise ConfigError(f"{field}: {value!r} is more than {MAX_TIME_US // 1_000_000} s")
    return us


def _percent(field: str, value: object) -> float:
    if value is None:
        return 0.0
    number, _ = _split(field, value, {"%": 1}, "%", "1%")
    if number > 100:
        raise ConfigError(f"{field}: {value!r} is more than 100%")
    return number


def _rate(field: str, value: object) -> int:
    if value is None:
        return 0
    number, scale = _split(field, value, _RATE, "bit", "10mbit")
    bits = round(number * scale)
    if value and bits < 8:
        raise ConfigError(f"{field}: {value!r} is less than 8 bit/s (one byte a second)")
    if bits > MAX_RATE_BIT:
        raise ConfigError(f"{field}: {value!r} is more than netem's {MAX_RATE_BIT // 10**9} "
                          "gbit")
    return bits


def _time_text(us: int) -> str:
    if us % 1_000_000 == 0:
        return f"{us // 1_000_000}s"
    if us % 1000 == 0:
        return f"{us // 1000}ms"
    return f"{us}us"


def _rate_text(bits: int) -> str:
    for unit, scale in (("gbit", 10**9), ("mbit", 10**6), ("kbit", 1000)):
        if bits % scale == 0:
            return f"{bits // scale}{unit}"
    return f"{bits}bit"
