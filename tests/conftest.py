"""Shared fixtures: the real shared-filesystem testbeds and simulated hosts (tests/fsbed.py)."""

from tests.fsbed import hostsim, shared_fs

__all__ = ["hostsim", "shared_fs"]
