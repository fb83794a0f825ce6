"""Who may use the store: ownership, modes and setgid against the web nodes' users; its key and buckets; room.

Two set-ups work (README, "Permissions"): every node runs as the store's
owner (files 0600, directories 0700), or as different users who share the
store's group (files 0660, directories 0770, a setgid store directory so
that everything created inside takes the store's group).  ``--uid a,b``
names the users; the checks say which set-up they see and what breaks it.
"""

from __future__ import annotations

import contextlib
import grp
import os
import pwd
import stat
from collections.abc import Iterable

from .._fs import Dir
from .._identity import process_umask
from ..fileformat import HEADER_SIZE, MAC_SIZE
from ..layout import BUCKETS, NAMING_KEY_FILE, Kind, classify
from ._context import Context
from ._verdict import Status, Verdict, fmt_bytes

__all__ = ["R", "W", "X", "check_permissions", "check_space", "check_store_files", "may", "user_name"]

R, W, X = 4, 2, 1
_SAMPLE_FILES = 16  # session files whose modes are looked at
_LISTED = 4  # problems named in a verdict (the rest are counted)


def user_name(uid: int) -> str:
    """The user's name (or the number)."""
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def group_name(gid: int) -> str:
    """The group's name (or the number)."""
    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        return str(gid)


def groups_of(uid: int) -> set[int]:
    """Every group *uid* is in (primary and supplementary)."""
    try:
        user = pwd.getpwuid(uid)
    except KeyError:
        return set()
    gids = {user.pw_gid}
    with contextlib.suppress(OSError):
        gids.update(os.getgrouplist(user.pw_name, user.pw_gid))
    return gids


def primary_group(uid: int) -> int | None:
    """The user's primary group."""
    try:
        return pwd.getpwuid(uid).pw_gid
    except KeyError:
        return None


def may(uid: int, st: os.stat_result, want: int) -> bool:
    """Whether *uid* has the *want* bits (R|W|X) on an entry with *st*, by its mode bits (ACLs aside)."""
    if uid == 0:
        return True  # (an NFS server may still squash root: the created-owner check reports that)
    mode = st.st_mode
    if uid == st.st_uid:
        shift = 6
    elif st.st_gid in groups_of(uid):
        shift = 3
    else:
        shift = 0
    return (mode >> shift) & want == want


def _describe(st: os.stat_result) -> str:
    mode = stat.S_IMODE(st.st_mode)
    setgid = " (setgid)" if mode & stat.S_ISGID and stat.S_ISDIR(st.st_mode) else ""
    return f"{user_name(st.st_uid)}:{group_name(st.st_gid)} {mode:04o}{setgid}"


def _names(uids: Iterable[int]) -> str:
    return ", ".join(user_name(u) for u in uids)


# ------------------------------------------------------------------ the store's directory
def _setgid_problem(st: os.stat_result, uids: set[int]) -> list[str]:
    if st.st_mode & stat.S_ISGID:
        return []
    elsewhere = [u for u in uids if u != 0 and primary_group(u) != st.st_gid]
    if not elsewhere:
        return []  # everyone's primary group is the store's: what they create takes it anyway
    return [
        f"no setgid bit: what {_names(elsewhere)} create would take their own primary group and the others "
        "could not use it: chmod g+s"
    ]


def _group_problems(st: os.stat_result, uids: set[int]) -> list[str]:
    """What breaks the group-shared set-up for several users (empty: it is right)."""
    problems = []
    outsiders = [u for u in uids if u not in (0, st.st_uid) and st.st_gid not in groups_of(u)]
    if outsiders:
        problems.append(
            f"{_names(outsiders)} not in the store's group {group_name(st.st_gid)}: several users share a store "
            "through its group (usermod -aG GROUP USER)"
        )
    if (st.st_mode >> 3) & (R | W | X) != R | W | X:
        problems.append("the group may not read, write and search it: chmod 2770 (files 0660, dir_mode 0o770)")
    return problems + _setgid_problem(st, uids)


def _permission_problems(ctx: Context, st: os.stat_result, uids: list[int], umask: int) -> list[str]:
    problems = [f"{user_name(u)} cannot create entries in it" for u in uids if not may(u, st, W | X)]
    read_only = bool(os.fstatvfs(ctx.root.fd).f_flag & os.ST_RDONLY)
    if not ctx.options.uids and not read_only and not os.access(".", os.W_OK | os.X_OK, dir_fd=ctx.root.fd):
        problems.append(f"{user_name(os.geteuid())} cannot create entries in it (access check)")
    if len(set(uids)) > 1:
        problems += _group_problems(st, set(uids))
    if umask & 0o300:
        problems.append(f"umask {umask:03o} removes the owner's write/search bits: new buckets would be unusable")
    return problems


def check_permissions(ctx: Context) -> Verdict:
    """Owner, mode, setgid and umask of PATH against the users that will use it."""
    st = ctx.root.stat()
    umask = process_umask()
    figure = f"owner {_describe(st)}, umask {umask:03o}"
    uids = ctx.options.uids or [os.geteuid()]
    problems = _permission_problems(ctx, st, uids, umask)
    warnings = _permission_warnings(ctx, st)
    data = {"uid": st.st_uid, "gid": st.st_gid, "mode": f"{stat.S_IMODE(st.st_mode):04o}", "umask": f"{umask:03o}"}
    data["uids"] = uids
    if problems:
        return Verdict("permissions", "permissions", "fail", figure, "; ".join(problems + warnings), data)
    if warnings:
        return Verdict("permissions", "permissions", "warn", figure, "; ".join(warnings), data)
    how = "through its group" if len(set(uids)) > 1 else "as its owner" if uids[0] == st.st_uid else ""
    # Root passes every check; what matters is the web servers' users.
    alone = os.geteuid() == 0 and not ctx.options.uids
    note = "checked for root only: name the web servers' users with --uid USER[,USER]" if alone else ""
    return Verdict(
        "permissions", "permissions", "ok", f"{figure}; writable by {_names(uids)} {how}".rstrip(), note, data
    )


def _permission_warnings(ctx: Context, st: os.stat_result) -> list[str]:
    warnings = []
    if st.st_mode & 0o002 and not st.st_mode & stat.S_ISVTX:
        warnings.append("world-writable: any local user can remove sessions and locks (chmod o-w)")
    created = _created_owner(ctx)
    if created is not None and created != os.geteuid():
        warnings.append(
            f"files created here belong to uid {created}, not {os.geteuid()} (root_squash / all_squash / sshfs "
            "remote user): make sure every node maps to the same uid"
        )
    return warnings


def _created_owner(ctx: Context) -> int | None:
    if not ctx.writable:
        return None
    try:
        return ctx.work.dir.lstat("hello").st_uid
    except OSError:
        return None


# ------------------------------------------------------------------ the key and the buckets
class _Findings:
    """Problems about the store's entries, named up to a bound and counted beyond it."""

    def __init__(self) -> None:
        self.items: list[str] = []
        self.count = 0

    def add(self, text: str) -> None:
        self.count += 1
        if len(self.items) < _LISTED:
            self.items.append(text)

    def text(self) -> str:
        more = f" (and {self.count - len(self.items)} more)" if self.count > len(self.items) else ""
        return "; ".join(self.items) + more


def _check_entry(found: _Findings, what: str, st: os.stat_result, uids: list[int], want: int, root_gid: int) -> None:
    shared = len(set(uids)) > 1
    blocked = [u for u in uids if not may(u, st, want)]
    if blocked:
        found.add(f"{_names(blocked)} cannot {'read' if want == R else 'use'} {what} ({_describe(st)})")
    if shared and st.st_gid != root_gid:
        found.add(f"{what} belongs to group {group_name(st.st_gid)}, not the store's ({_describe(st)})")
    if shared and stat.S_ISDIR(st.st_mode) and not st.st_mode & stat.S_ISGID:
        found.add(f"{what} lacks the setgid bit ({_describe(st)})")


def _sample_sessions(root: Dir, bucket: str, limit: int) -> list[tuple[str, os.stat_result]]:
    found: list[tuple[str, os.stat_result]] = []
    with root.opendir(bucket) as directory, directory.entries() as entries:
        for entry in entries:
            if classify(entry.name).kind is Kind.SESSION:
                found.append((f"session file {bucket}/{entry.name[:8]}...", entry.stat(follow_symlinks=False)))
                if len(found) >= limit:
                    break
    return found


def _check_buckets(root: Dir, found: _Findings, uids: list[int], root_gid: int) -> tuple[int, int]:
    """Every bucket there is, and a sample of session files; returns (buckets, session files) looked at."""
    buckets = sessions = 0
    for name in BUCKETS:
        try:
            st = root.lstat(name)
        except FileNotFoundError:
            continue
        buckets += 1
        if not stat.S_ISDIR(st.st_mode):
            found.add(f"bucket {name} is not a directory (never followed)")
            continue
        _check_entry(found, f"bucket {name}", st, uids, R | W | X, root_gid)
        if sessions < _SAMPLE_FILES and may(os.geteuid(), st, R | X):
            for what, fst in _sample_sessions(root, name, _SAMPLE_FILES - sessions):
                sessions += 1
                _check_entry(found, what, fst, uids, R, root_gid)
    return buckets, sessions


def check_store_files(ctx: Context) -> Verdict:
    """The naming key, the buckets and a few session files: readable and usable by every listed user."""
    title = "store files"
    root = ctx.root
    if root.exists(NAMING_KEY_FILE) is not True:
        return Verdict("store", title, "skip", "not an fssession store yet (fssession init PATH creates one)")
    uids = ctx.options.uids or [os.geteuid()]
    root_gid = root.stat().st_gid
    found = _Findings()
    key = root.lstat(NAMING_KEY_FILE)
    if not stat.S_ISREG(key.st_mode):
        found.add("the naming key is not a regular file")
    _check_entry(found, "the naming key", key, uids, R, root_gid)
    buckets, sessions = _check_buckets(root, found, uids, root_gid)
    figure = f"naming key {_describe(key)}, {buckets} buckets, {sessions} session files looked at"
    data = {"buckets": buckets, "session_files": sessions, "problems": found.count, "uids": uids}
    if found.count:
        advice = found.text() + ": fix with chown/chmod (fssession init PATH --force resets the key and buckets)"
        return Verdict("store", title, "fail", figure, advice, data)
    return Verdict("store", title, "ok", f"{figure}: usable by {_names(uids)}", data=data)


# ------------------------------------------------------------------ space
def _round_up(n: int, block: int) -> int:
    return -(-n // block) * block


def _space_needed(n: int, size: int, block: int) -> tuple[int, int]:
    """(bytes, inodes) for *n* sessions of *size* bytes: a file and a lock marker (a symlink: an inode) each."""
    per_bucket = _round_up(max(1, n // len(BUCKETS)) * 200, block)  # names of ~100 bytes, file and marker
    need_bytes = n * _round_up(HEADER_SIZE + size + MAC_SIZE, block) + len(BUCKETS) * per_bucket
    return need_bytes, 2 * n + len(BUCKETS) + 1


def _space_status(free_bytes: int, inodes: int, need_bytes: int, need_inodes: int) -> tuple[Status, str]:
    if free_bytes == 0 or inodes == 0:
        return "fail", "the filesystem is full: free space or inodes"
    if free_bytes < need_bytes or inodes < need_inodes:
        return "fail", "not enough room for that many sessions: grow it"
    if free_bytes < 2 * need_bytes or inodes < 2 * need_inodes:
        return "warn", "less than twice the room needed: sessions and temp files peak"
    return "ok", ""


def check_space(ctx: Context) -> Verdict:
    """Free space and inodes against the store's size at --sessions sessions of --session-size bytes."""
    sv = os.fstatvfs(ctx.root.fd)
    block = sv.f_frsize or sv.f_bsize or 4096
    free_bytes = sv.f_bavail * block
    n, size = ctx.options.sessions, ctx.options.session_size
    need_bytes, need_inodes = _space_needed(n, size, block)
    free_inodes = sv.f_favail if sv.f_files > 0 else None  # (some filesystems do not count inodes)
    figure = f"{fmt_bytes(free_bytes)} free" + (f", {free_inodes} inodes free" if free_inodes is not None else "")
    figure += f"; {n} sessions of {size} B need ~{fmt_bytes(need_bytes)}"
    figure += f" and {need_inodes} inodes" if free_inodes is not None else ""
    data = {"free_bytes": free_bytes, "free_inodes": free_inodes, "need_bytes": need_bytes}
    data |= {"need_inodes": need_inodes, "sessions": n, "session_size": size}
    inodes = free_inodes if free_inodes is not None else 2 * need_inodes
    status, advice = _space_status(free_bytes, inodes, need_bytes, need_inodes)
    return Verdict("space", "space", status, figure, advice, data)
