"""TCP migration authenticated with a one-time TLS pre-shared key.

QEMU's incoming TCP listener accepts whoever connects first; on 127.0.0.1
that is any local user, who could feed the destination (a root QEMU) a
migration stream of their making. Both QEMUs therefore get a ``tls-creds-psk``
object reading a fresh random key from a 0600 file in the destination's 0700
run directory: a peer without the key fails the TLS handshake before QEMU
reads a byte of migration data. The key file and objects go once the
migration ends (either way).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
from typing import TYPE_CHECKING

from vmanager.errors import VmanagerError

if TYPE_CHECKING:
    from vmanager.machine.part import MachineView as MigrationVM

CREDS_ID = "vm-migrate-tls"
USERNAME = "vmanager"


def authenticate(src: MigrationVM, dst: MigrationVM) -> None:
    """Give both ends the same fresh PSK and make migration use TLS."""
    directory = dst.run_dir / "migrate-tls"
    directory.mkdir(mode=0o700)
    fd = os.open(directory / "keys.psk", os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW,
                 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(f"{USERNAME}:{secrets.token_hex(32)}\n")
    for m, endpoint in ((dst, "server"), (src, "client")):
        args = {"qom-type": "tls-creds-psk", "id": CREDS_ID, "dir": str(directory),
                "endpoint": endpoint}
        if endpoint == "client":
            args["username"] = USERNAME
        m.qmp("object-add", args)
        m.qmp("migrate-set-parameters", {"tls-creds": CREDS_ID})


def release(*machines: MigrationVM, dst: MigrationVM) -> None:
    """Drop the TLS settings from running ends and remove the key (best effort)."""
    for m in machines:
        with contextlib.suppress(VmanagerError):  # an end that is gone has nothing to drop
            m.qmp("migrate-set-parameters", {"tls-creds": ""})
            m.qmp("object-del", {"id": CREDS_ID})
    shutil.rmtree(dst.run_dir / "migrate-tls", ignore_errors=True)
