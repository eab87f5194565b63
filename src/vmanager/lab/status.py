"""What a lab's objects are doing: ``inspect`` for ``vmanager inspect``."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

from vmanager.lab import record as labrec
from vmanager.lab.runner import _router_present
from vmanager.lab.spec import Lab
from vmanager.net import adopt as _net
from vmanager.state import records


def inspect(lab: Lab) -> dict[str, Any]:
    """The lab's objects with their state; machines with MACs and DHCP addresses."""
    rec = labrec.load(lab.name)
    leases: dict[str, str] = {}
    routers = []
    for r in lab.routers:
        item = rec.find("router", r.name) if rec else None
        present = item is not None and _router_present(item)
        if item and item.get("run_dir"):
            with contextlib.suppress(OSError):
                for line in (Path(item["run_dir"]) / "leases").read_text().splitlines():
                    f = line.split()
                    if len(f) >= 3:
                        leases[f[1].lower()] = f[2]
        routers.append({"name": r.name, "mode": r.mode, "state": "up" if present else "down",
                        "address": item.get("address") if item else None,
                        "subnet": item.get("subnet") if item else None,
                        "switch": r.switch})
    from vmanager.net import stable_mac
    machines = []
    for m in lab.machines:
        mrec = records.find(m.name)
        st = records.status(mrec) if mrec else None
        nics = []
        for i, n in enumerate(m.nics):
            mac = n.mac or stable_mac(m.name, i)
            nics.append({"index": i, "mac": mac, "switch": n.switch, "vlan": n.vlan,
                         "address": leases.get(mac.lower())})
        machines.append({"name": m.name, "state": st.state if st else "absent",
                         "pid": st.pid if st else None, "detail": st.detail if st else "",
                         "nics": nics, "template": m.template})
    switches = [{"name": s.name, "vlan_filtering": s.vlan_filtering,
                 "state": "up" if _net.link_exists(s.name) else "down"} for s in lab.switches]
    hosts = [{"name": h.name, "port": h.port, "address": h.address,
              "state": "up" if _net.namespace_exists(h.name) else "down"} for h in lab.hosts]
    return {"lab": lab.name, "file": str(lab.path), "up": rec is not None,
            "changed": rec is not None and rec.digest != lab.digest, "hosts": hosts,
            "switches": switches, "routers": routers, "machines": machines}
