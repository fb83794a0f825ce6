"""Fixtures for every folder: the shared-filesystem testbeds and simulated hosts (tests/fsbed.py), and
filesystems that refuse writes (tests/support/fixtures.py)."""

from tests.fsbed import hostsim, shared_fs
from tests.support.fixtures import full_fs, readonly_fs, unwritable_dir

__all__ = ["full_fs", "hostsim", "readonly_fs", "shared_fs", "unwritable_dir"]
