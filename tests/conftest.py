"""Shared fixtures: the shared-filesystem testbeds, simulated hosts (tests/fsbed.py), the NFS VM (tests/nfsbed.py)."""

from tests.fsbed import hostsim, shared_fs
from tests.nfsbed import nfs_vm

__all__ = ["hostsim", "nfs_vm", "shared_fs"]
