"""Exports of a lab to other systems' formats (KubeVirt)."""

from vmanager.export.kubevirt import Export, export, to_yaml

__all__ = ["Export", "export", "to_yaml"]
