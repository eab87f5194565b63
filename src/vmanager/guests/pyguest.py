"""The tiny guest plus Python: run vmanager's own code on a real Debian kernel.

The host vmanager runs on may lack kernel features vmanager drives (bonding,
802.1Q, bridge VLAN filtering). This guest boots the tiny guest's Debian kernel
and busybox initramfs with a second initramfs archive appended (the kernel
unpacks every cpio archive of one initrd, later files replacing earlier ones):

* Python 3.11 from Debian's ``python3.11-minimal``/``libpython3.11-stdlib`` and
  the shared libraries its interpreter and extension modules need (found by
  following ``DT_NEEDED`` through the packages' library dependencies), the pure
  standard library without its tests, IDLE and Tk, byte-compiled on the host;
* pyroute2 and ``qemu.qmp`` copied from the running interpreter's site-packages;
* kernel modules the tiny guest leaves out (:data:`EXTRA_MODULES`: bridge, veth,
  tun, macvtap...) with a ``modules.dep``/``modules.alias`` covering both sets;
* the vmanager package that is running this builder (so a test exercises the
  working tree), plus any ``extra_files`` the caller ships.

The Python runtime is built once per tiny guest and cached next to it under
``$XDG_CACHE_HOME/vmanager/guests``; the final initrd (runtime plus the current
vmanager source) is rebuilt, in a fraction of a second, whenever that source
changes.

Example::

    from vmanager import Machine
    from vmanager.guests.pyguest import python_guest

    guest = python_guest()
    with Machine("py1", memory=512, **guest.machine_args("py1")) as m:
        m.start_vm()
        m.wait_ready()
        print(m.succeed("python3 -c 'import vmanager.net; print(vmanager.net.Bond)'"))
"""

from __future__ import annotations

import compileall
import fcntl
import hashlib
import importlib.util
import json
import logging
import os
import py_compile
import re
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vmanager import paths
from vmanager.errors import GuestBuildError
from vmanager.guests import _build
from vmanager.guests._elf import Files as _Files
from vmanager.guests._elf import interpreter as _interpreter
from vmanager.guests.tiny import TinyGuest, _closure, _sha256, tiny_guest

log = logging.getLogger(__name__)

#: The interpreter inside the guest (``sys.executable`` there).
GUEST_PYTHON = "/usr/bin/python3"
#: Debian's packages that make up the interpreter and its standard library.
PYTHON_PACKAGES = ("python3.11-minimal", "libpython3.11-minimal", "libpython3.11-stdlib")
PYTHON_VERSION = (3, 11)
#: Kernel modules added on top of the tiny guest's (with their dependencies).
EXTRA_MODULES = ("bridge", "veth", "8021q", "bonding", "tun", "macvlan", "macvtap", "dummy",
                 "sch_netem")
#: Third-party packages vmanager imports, copied from this interpreter.
SITE_PACKAGES = ("pyroute2", "qemu")
#: Where the copied packages and vmanager go (on Debian's ``sys.path`` by ``site``).
DIST_PACKAGES = "usr/lib/python3/dist-packages"

_STDLIB = "usr/lib/python3.11"
#: Parts of the standard library no test needs (and that are large).
_STDLIB_SKIP = frozenset({"test", "idlelib", "tkinter", "turtledemo", "ensurepip", "lib2to3",
                          "pydoc_data", "distutils", "config-3.11-x86_64-linux-gnu"})
#: Extension modules left out: their libraries are big and nothing here uses them.
_EXTENSION_SKIP = re.compile(r"^(_dbm|_gdbm|_curses|_curses_panel|readline|nis|_tkinter|"
                             r"_test\w*|_ctypes_test|xxlimited\w*|_xxtestfuzz|xxsubtype)\.")
#: Dependencies that hold no shared library (configuration, tools, data).
_DEPENDS_SKIP = frozenset({"media-types", "mime-support", "tzdata", "debconf", "dpkg",
                           "install-info", "sensible-utils"})
_LIB_DIRS = ("lib/x86_64-linux-gnu", "usr/lib/x86_64-linux-gnu", "lib64", "lib", "usr/lib")


@dataclass(frozen=True)
class PythonGuest:
    """A built Python guest: the tiny guest's kernel with the extended initrd."""

    kernel: Path
    initrd: Path
    kernel_version: str
    pvh: bool
    base: TinyGuest = field(repr=False)

    @property
    def python(self) -> str:
        """The interpreter's path inside the guest."""
        return GUEST_PYTHON

    def append(self, hostname: str | None = None) -> str:
        """The kernel command line (the tiny guest's)."""
        return self.base.append(hostname)

    def machine_args(self, hostname: str | None = None) -> dict[str, Any]:
        """Keyword arguments for :class:`vmanager.Machine` to boot this guest.

        Give the machine at least 384 MiB: the initramfs holds ~60 MB of files.
        TCG's translation buffer keeps QEMU's default size: the interpreter runs
        far more code than the tiny guest's shell.
        """
        return {**self.base.machine_args(hostname), "kernel": self.kernel,
                "initrd": self.initrd, "tcg_tb_size": None}


def python_guest(*, extra_files: Mapping[str, bytes] | None = None, rebuild: bool = False,
                 progress: Callable[[str], None] | None = None) -> PythonGuest:
    """Return the Python guest, building its runtime from Debian packages on first use.

    ``extra_files`` maps absolute guest paths to contents (for example a script
    to run); they join the initrd. ``rebuild=True`` downloads and assembles the
    Python runtime again.

    Raises :class:`GuestBuildError` when packages cannot be fetched or unpacked,
    or the running interpreter lacks pyroute2.
    """
    say = progress or (lambda _msg: None)
    base = tiny_guest(progress=progress)
    root = paths.private_dir(paths.cache_dir() / "guests")
    with os.fdopen(paths.open_lock(root / ".pylock"), "w") as lockf:
        fcntl.flock(lockf, fcntl.LOCK_EX)
        key = _runtime_key(base)
        directory = root / f"py-{base.kernel_version}-{key}"
        runtime = directory / "runtime.cpio"
        if rebuild or not _runtime_ok(directory):
            base = _build_runtime(base, directory, say)
            key = _runtime_key(base)
            if directory.name != f"py-{base.kernel_version}-{key}":
                # the tiny guest was rebuilt for a newer kernel: file the runtime under it
                final = root / f"py-{base.kernel_version}-{key}"
                shutil.rmtree(final, ignore_errors=True)
                directory.rename(final)
                directory, runtime = final, final / "runtime.cpio"
        extra = dict(extra_files or {})
        initrd = directory / f"initrd-{_source_key(extra)}.img"
        if not initrd.exists():
            source = _source_cpio(extra)
            tmp = initrd.with_suffix(".tmp")
            with tmp.open("wb") as out:
                for part in (base.initrd.read_bytes(), runtime.read_bytes(), source):
                    out.write(part)
                    out.write(b"\0" * (-len(part) % 512))
            tmp.replace(initrd)
        os.utime(initrd)
        for old in directory.glob("initrd-*.img"):
            if old != initrd and time.time() - old.stat().st_mtime > 3600:
                old.unlink(missing_ok=True)
        for old in root.glob("py-*"):
            if old != directory and time.time() - old.stat().st_mtime > 3600:
                shutil.rmtree(old, ignore_errors=True)
        return PythonGuest(kernel=base.kernel, initrd=initrd,
                           kernel_version=base.kernel_version, pvh=base.pvh, base=base)


def _files_digest(h: Any, top: Path) -> None:
    for path in sorted(top.rglob("*")):
        if path.is_file() and "__pycache__" not in path.parts:
            h.update(str(path.relative_to(top)).encode() + b"\0")
            h.update(path.read_bytes())


def _runtime_key(base: TinyGuest) -> str:
    """What the cached runtime depends on: this builder, the base initrd, site-packages."""
    h = hashlib.sha256()
    for module_file in (__file__, _build.__file__):
        h.update(Path(module_file or "").read_bytes())
    h.update(_sha256(base.initrd).encode())
    for package in SITE_PACKAGES:
        for location in _package_dirs(package):
            _files_digest(h, location)
    return h.hexdigest()[:12]


def _runtime_ok(directory: Path) -> bool:
    try:
        meta = json.loads((directory / "manifest.json").read_text())
        return bool(_sha256(directory / "runtime.cpio") == meta["runtime.cpio"])
    except (OSError, ValueError, KeyError, TypeError):
        return False


def _package_dirs(package: str) -> list[Path]:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise GuestBuildError(f"the Python guest needs the {package!r} package, which this "
                              "interpreter cannot import")
    return [Path(p) for p in spec.submodule_search_locations]


def _build_runtime(base: TinyGuest, directory: Path,
                   say: Callable[[str], None]) -> TinyGuest:
    """Build ``directory/runtime.cpio``; return the tiny guest it fits (maybe rebuilt)."""
    work = Path(tempfile.mkdtemp(prefix=".pybuild-", dir=directory.parent))
    try:
        debs = work / "debs"
        debs.mkdir()
        tree = work / "tree"
        say(f"downloading linux-image-{base.kernel_version} for its extra modules")
        kernel_deb = _build.download(f"linux-image-{base.kernel_version}", debs)
        _build.extract(kernel_deb, tree)
        vmlinuz = tree / "boot" / f"vmlinuz-{base.kernel_version}"
        booted = base.kernel.with_name("vmlinuz")
        if not booted.exists() or _sha256(vmlinuz) != _sha256(booted):
            # the archive moved on within the same ABI: rebuild the tiny guest from it
            log.warning("the tiny guest's kernel differs from linux-image-%s in the archive; "
                        "rebuilding the tiny guest", base.kernel_version)
            say("rebuilding the tiny guest for the archive's kernel")
            base = tiny_guest(rebuild=True)
            if base.kernel_version not in {p.name for p in (tree / "lib/modules").iterdir()}:
                raise GuestBuildError(f"the rebuilt tiny guest runs {base.kernel_version}; "
                                      "build the Python guest again")
        moddir = tree / "lib" / "modules" / base.kernel_version

        say("resolving Python's packages")
        for deb in _download_closure(PYTHON_PACKAGES, debs):
            _build.extract(deb, tree)

        cpio = _build.Cpio()
        say("adding kernel modules")
        _add_modules(cpio, base, moddir)
        say("adding Python")
        _add_python(cpio, tree)
        say("adding pyroute2 and qemu.qmp")
        for package in SITE_PACKAGES:
            for location in _package_dirs(package):
                _add_tree(cpio, location, f"{DIST_PACKAGES}/{package}")

        directory.mkdir(parents=True, exist_ok=True)
        target = directory / "runtime.cpio"
        target.write_bytes(cpio.getvalue())
        manifest = {"runtime.cpio": _sha256(target), "kernel_version": base.kernel_version,
                    "packages": sorted(p.name for p in debs.glob("*.deb"))}
        (directory / "manifest.json").write_text(json.dumps(manifest, indent=2))
        say(f"built the Python runtime ({target.stat().st_size >> 20} MiB)")
        return base
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _download_closure(roots: Iterable[str], into: Path) -> list[Path]:
    """Download ``roots`` and the library packages they depend on.

    Configuration, data and documentation packages are not followed (the
    ``*-common``/``*-data``/``*-base`` ones and :data:`_DEPENDS_SKIP`): only
    shared libraries can be where ``DT_NEEDED`` leads.
    """
    todo = list(roots)
    seen: set[str] = set()
    debs = []
    while todo:
        package = todo.pop()
        if package in seen:
            continue
        seen.add(package)
        deb = _build.download(package, into)
        debs.append(deb)
        depends = ", ".join(filter(None, (_build.deb_field(deb, "Pre-Depends"),
                                          _build.deb_field(deb, "Depends"))))
        for clause in depends.split(","):
            first = clause.split("|")[0].strip().split(" ", 1)[0].split(":", 1)[0]
            if (first and first not in seen and first not in _DEPENDS_SKIP
                    and not first.endswith(("-common", "-data", "-base", "-doc"))):
                todo.append(first)
    return debs


def _read_cpio(data: bytes) -> dict[str, bytes]:
    """The regular files of a ``newc`` archive (the tiny guest's initrd), by name."""
    files: dict[str, bytes] = {}
    pos = 0
    while pos + 110 <= len(data):
        if data[pos:pos + 6] != b"070701":
            raise GuestBuildError(f"initrd: no cpio header at offset {pos}")
        fields = [int(data[pos + 6 + 8 * i:pos + 14 + 8 * i], 16) for i in range(13)]
        mode, size, namesize = fields[1], fields[6], fields[11]
        name = data[pos + 110:pos + 110 + namesize - 1].decode()
        pos = pos + 110 + namesize
        pos += -pos % 4
        if name == "TRAILER!!!":
            break
        if mode & 0o170000 == 0o100000:
            files[name] = data[pos:pos + size]
        pos += size
        pos += -pos % 4
    return files


def _add_modules(cpio: _build.Cpio, base: TinyGuest, moddir: Path) -> None:
    """Add :data:`EXTRA_MODULES` and an index covering them and the base's modules."""
    prefix = f"lib/modules/{base.kernel_version}/"
    present = _read_cpio(base.initrd.read_bytes())
    old_dep = present.get(prefix + "modules.dep", b"").decode()
    stored: dict[str, str] = {}  # module name -> path as modules.dep names it
    for line in old_dep.splitlines():
        if ":" in line:
            path = line.split(":", 1)[0]
            stored[path.rsplit("/", 1)[-1].split(".ko", 1)[0].replace("-", "_")] = path
    modules = _build.collect_modules(moddir, EXTRA_MODULES)
    by_name = {m.name: m for m in modules}
    new = [m for m in modules if m.name not in stored]
    for mod in new:
        stored[mod.name] = mod.relpath
        cpio.file(prefix + mod.relpath, mod.data)
    lines = [old_dep.rstrip("\n")] if old_dep.strip() else []
    for mod in new:
        deps = [stored[n] for n in _closure(mod.name, by_name) if n != mod.name]
        lines.append(f"{mod.relpath}: {' '.join(reversed(deps))}".rstrip())
    cpio.file(prefix + "modules.dep", ("\n".join(lines) + "\n").encode())
    aliases = present.get(prefix + "modules.alias", b"").decode().rstrip("\n").splitlines()
    aliases += [f"alias {a} {m.name}" for m in new for a in m.aliases]
    cpio.file(prefix + "modules.alias", ("\n".join(aliases) + "\n").encode())


def _add_python(cpio: _build.Cpio, tree: Path) -> None:
    libs: dict[str, str] = {}
    for d in reversed(_LIB_DIRS):
        if (tree / d).is_dir():
            for p in (tree / d).iterdir():
                if ".so" in p.name and (p.is_file() or p.is_symlink()):
                    libs[p.name] = f"{d}/{p.name}"
    files = _Files(cpio, tree)
    binary = f"usr/bin/python{PYTHON_VERSION[0]}.{PYTHON_VERSION[1]}"
    if not files.add_elf(binary, libs):
        raise GuestBuildError(f"Python guest: a library {binary} needs is in no package")
    files.add(_interpreter((tree / binary).read_bytes()).lstrip("/"))
    cpio.symlink("usr/bin/python3", binary.rsplit("/", 1)[1])

    stdlib = tree / _STDLIB
    for top in list(stdlib.iterdir()):
        if top.name in _STDLIB_SKIP or top.name == "site-packages":
            shutil.rmtree(top) if top.is_dir() else top.unlink()
    dynload = stdlib / "lib-dynload"
    for ext in sorted(dynload.iterdir()):
        keep = not _EXTENSION_SKIP.match(ext.name) and files.add_elf(
            str(ext.relative_to(tree)), libs)
        if not keep:
            ext.unlink()
    _add_tree(cpio, stdlib, _STDLIB, skip=("lib-dynload",))


def _add_tree(cpio: _build.Cpio, top: Path, dest: str, skip: Iterable[str] = ()) -> None:
    """Add the ``.py`` (and data) files under ``top`` at ``dest``, byte-compiled.

    Byte code is made here when this interpreter is the guest's version (under TCG
    compiling at import would cost seconds); unchecked-hash ``.pyc`` files do not
    depend on file times, which the archive does not keep.
    """
    with tempfile.TemporaryDirectory(prefix=".vmanager-pyc-") as tmp:
        stage = Path(tmp) / "stage"
        shutil.copytree(top, stage, symlinks=True,
                        ignore=shutil.ignore_patterns("__pycache__", "*.pyc", *skip))
        if sys.version_info[:2] == PYTHON_VERSION:
            compileall.compile_dir(stage, ddir="/" + dest, quiet=2, workers=1,
                                   invalidation_mode=py_compile.PycInvalidationMode
                                   .UNCHECKED_HASH)
        for path in sorted(stage.rglob("*")):
            rel = f"{dest}/{path.relative_to(stage)}"
            if path.is_symlink():
                cpio.symlink(rel, os.readlink(path))
            elif path.is_dir():
                cpio.mkdir(rel)
            else:
                cpio.file(rel, path.read_bytes(), path.stat().st_mode & 0o755)


def _package_root() -> Path:
    return Path(__file__).resolve().parent.parent


def _source_key(extra_files: Mapping[str, bytes]) -> str:
    """A digest of what :func:`_source_cpio` packs (byte code is not reproducible)."""
    h = hashlib.sha256()
    _files_digest(h, _package_root())
    for name, data in sorted(extra_files.items()):
        h.update(name.encode() + b"\0" + hashlib.sha256(data).digest())
    return h.hexdigest()[:12]


def _source_cpio(extra_files: Mapping[str, bytes]) -> bytes:
    """The running vmanager package (and ``extra_files``) as one cpio archive."""
    cpio = _build.Cpio()
    _add_tree(cpio, _package_root(), f"{DIST_PACKAGES}/vmanager")
    for name, data in sorted(extra_files.items()):
        if not name.startswith("/"):
            raise GuestBuildError(f"extra file {name!r} must be an absolute guest path")
        cpio.file(name, data, 0o755)
    return cpio.getvalue()


__all__ = ["EXTRA_MODULES", "GUEST_PYTHON", "PythonGuest", "python_guest"]
