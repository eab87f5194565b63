"""``vmanager export --kubevirt LABFILE``: a lab as KubeVirt manifests."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any


def cmd_export(args: argparse.Namespace) -> int:
    from vmanager.export import export, to_yaml
    from vmanager.lab import load
    result = export(load(args.file), namespace=args.namespace, network=args.network,
                    image_prefix=args.image_prefix)
    text = to_yaml(result)
    if args.output:
        Path(args.output).write_text(text)
    else:
        sys.stdout.write(text)
    if not args.quiet:
        for note in result.notes:
            print(f"note: {note}", file=sys.stderr)
    return 0


def add_parsers(sub: Any, common: argparse.ArgumentParser) -> None:
    """Register ``export``."""
    p = sub.add_parser("export", parents=[common], help="write a lab as another system's "
                       "manifests (KubeVirt)", description="write a lab as KubeVirt "
                       "VirtualMachines and Multus NetworkAttachmentDefinitions (YAML); "
                       "what has no translation is listed as notes")
    p.set_defaults(func=cmd_export)
    p.add_argument("--kubevirt", action="store_true", required=True,
                   help="KubeVirt manifests (the only format so far)")
    p.add_argument("file", help="the lab's TOML file")
    p.add_argument("-o", "--output", help="where to write (default: stdout)")
    p.add_argument("-n", "--namespace", help="the Kubernetes namespace to put in metadata")
    p.add_argument("--network", choices=("bridge", "ovn-layer2"), default="bridge",
                   help="switches as CNI bridge networks (one bridge per node) or "
                        "OVN-Kubernetes layer-2 overlays (one segment across nodes)")
    p.add_argument("--image-prefix", default="registry.invalid/vmanager", metavar="REGISTRY",
                   help="where kernel-boot container images are to be pushed")
