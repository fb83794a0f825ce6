"""Fixtures for every folder: the shared-filesystem testbeds and simulated hosts (tests/fsbed.py), the NFS VM
(tests/nfsbed.py), and filesystems that refuse writes (tests/support/fixtures.py)."""

from tests.fsbed import hostsim, shared_fs
from tests.nfsbed import nfs_vm
from tests.support.fixtures import full_fs, readonly_fs, unwritable_dir

__all__ = ["full_fs", "hostsim", "nfs_vm", "readonly_fs", "shared_fs", "unwritable_dir"]
