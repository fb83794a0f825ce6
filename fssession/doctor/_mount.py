"""Which mount holds the store, and whether its attribute cache fits fs_slack."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

from ._verdict import Status, Verdict

__all__ = ["LOCAL_FS", "Mount", "check_mount", "find_mount"]

LOCAL_FS = frozenset(
    {"ext2", "ext3", "ext4", "xfs", "btrfs", "tmpfs", "ramfs", "zfs", "f2fs", "overlay", "jfs", "bcachefs", "vfat"}
    | {"exfat", "reiserfs", "nilfs2", "hfsplus", "ntfs", "ntfs3", "squashfs", "devtmpfs"}
)


@dataclass
class Mount:
    """One line of /proc/self/mountinfo."""

    point: str
    fstype: str
    source: str
    options: dict[str, str]

    @property
    def local(self) -> bool:
        """Whether no other host can mount it."""
        return self.fstype in LOCAL_FS


def _unescape(text: str) -> str:
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), text)


def _parse(line: str) -> Mount | None:
    left, sep, right = line.partition(" - ")
    fields, tail = left.split(), right.split()
    if not sep or len(fields) < 6 or len(tail) < 2:
        return None
    options: dict[str, str] = {}
    for item in ",".join([fields[5], *tail[2:3]]).split(","):
        key, _, value = item.partition("=")
        if key:
            options[key] = value
    return Mount(_unescape(fields[4]), tail[0], _unescape(tail[1]), options)


def find_mount(path: str) -> Mount | None:
    """The mount that holds *path* (the longest mount point that contains it)."""
    try:
        with open("/proc/self/mountinfo", encoding="utf-8", errors="replace") as f:
            lines = f.read().splitlines()
    except OSError:
        return None
    real = os.path.realpath(path)
    best: Mount | None = None
    for mount in filter(None, map(_parse, lines)):
        inside = real == mount.point or real.startswith(mount.point.rstrip("/") + "/")
        if inside and (best is None or len(mount.point) >= len(best.point)):
            best = mount
    return best


def _nfs_attribute_cache(mount: Mount) -> float:
    if "noac" in mount.options:
        return 0.0
    if "actimeo" in mount.options:
        return float(mount.options["actimeo"])
    return float(mount.options.get("acdirmax", "60"))


def check_mount(mount: Mount | None, fs_slack: float) -> Verdict:
    """The filesystem type and, for NFS, whether its directory attribute cache fits *fs_slack*."""
    if mount is None:
        return Verdict("mount", "mount", "ok", "unknown (no /proc/self/mountinfo)")
    figure = f"{mount.fstype} {mount.source} on {mount.point}" + (" (local)" if mount.local else "")
    status: Status = "ok"
    advice = ""
    if mount.fstype.startswith("nfs"):
        acdirmax = _nfs_attribute_cache(mount)
        figure += f", acdirmax={acdirmax:g} s"
        if acdirmax > fs_slack:
            status = "warn"
            advice = (
                f"NFS may serve directory attributes {acdirmax:g} s old, more than fs_slack ({fs_slack:g} s): "
                f"mount with actimeo={max(1, int(fs_slack))} or raise fs_slack"
            )
    data = {"fstype": mount.fstype, "source": mount.source, "local": mount.local}
    return Verdict("mount", "mount", status, figure, advice, data)
