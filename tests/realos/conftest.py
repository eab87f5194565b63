"""Fixtures for real-distribution tests: the Debian image, built once and cached.

The image is built from Debian's archive on first use (about two minutes) and
reused from the cache afterwards; every test boots an overlay on it, so the
cached image is never written.
"""

from __future__ import annotations

import logging
import os

import pytest

from vmanager import images

if os.geteuid() != 0:
    pytest.skip("building and booting the Debian image needs root", allow_module_level=True)

log = logging.getLogger(__name__)


@pytest.fixture(scope="session")
def debian_image() -> images.Image:
    """Debian 12 with systemd, GRUB, qemu-guest-agent, cloud-init and OpenSSH."""
    return images.build("debian-12", progress=lambda line: log.info("image: %s", line))
