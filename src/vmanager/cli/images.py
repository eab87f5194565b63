"""``vmanager image build``: disk images of real distributions from their packages."""

from __future__ import annotations

import argparse
from typing import Any

from vmanager.cli._output import Progress, emit_json, table


def cmd_image_build(args: argparse.Namespace) -> int:
    from vmanager import images
    progress = Progress(quiet=args.json or args.quiet)
    with progress.step(f"image {args.name}"):
        image = images.build(args.name, args.path, size=args.size,
                             packages=[p for item in args.package for p in item.split(",") if p],
                             root_password=args.root_password, mirror=args.mirror,
                             rebuild=args.rebuild, progress=progress.callback())
    info = {"name": image.name, "path": str(image.path), "size": image.size,
            "cached": image.cached, "build_seconds": image.built_seconds,
            "file_bytes": image.path.stat().st_size, "packages": list(image.packages)}
    if args.json:
        emit_json(info)
    else:
        table(["name", "path", "virtual size", "file size"],
              [[image.name, image.path, f"{image.size >> 20} MiB",
                f"{info['file_bytes'] >> 20} MiB"]])  # type: ignore[operator]
    return 0


def cmd_image_list(args: argparse.Namespace) -> int:
    from vmanager import images
    rows = [[name, desc] for name, (_suite, desc) in sorted(images.DISTRIBUTIONS.items())]
    if args.json:
        emit_json([{"name": r[0], "description": r[1]} for r in rows])
    else:
        table(["name", "description"], rows)
    return 0


def add_parsers(sub: Any, common: argparse.ArgumentParser) -> None:
    """Register ``image build`` and ``image list``."""
    image = sub.add_parser("image", help="disk images of real distributions",
                           description="disk images built from distribution packages, "
                           "cached per user")
    isub = image.add_subparsers(dest="image_command", metavar="ACTION", required=True)
    build = isub.add_parser("build", parents=[common], help="build an image (or take it "
                            "from the cache) and copy it to PATH",
                            description="build a bootable qcow2 image from a distribution's "
                            "packages (needs root and mmdebstrap)")
    build.add_argument("name", help="the image, e.g. debian-12 ('vmanager image list')")
    build.add_argument("path", nargs="?", help="where to write the qcow2 (default: print the "
                       "cached image's path)")
    build.add_argument("--size", default="4G", help="virtual disk size (default 4G)")
    build.add_argument("--package", action="append", default=[], metavar="PKG[,PKG...]",
                       help="extra packages (repeatable)")
    build.add_argument("--root-password", default=None,
                       help="root's password (default: locked; use cloud-init or the agent)")
    build.add_argument("--mirror", default=None, help="a Debian archive URL (default: the "
                       "host's apt sources)")
    build.add_argument("--rebuild", action="store_true", help="build again, ignoring the cache")
    build.set_defaults(func=cmd_image_build)
    lst = isub.add_parser("list", parents=[common], help="the images vmanager can build")
    lst.set_defaults(func=cmd_image_list)
