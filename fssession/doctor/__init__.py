"""``fssession doctor PATH``: is this mount fit to hold sessions?

Run on each web node (several may run at once), it checks by doing rather
than by asking what NOTES.md ("What the shared filesystem must guarantee")
says fssession relies on: racing creates have exactly one winner, rename
over a file is atomic, the errnos the mount reports, timestamp granularity,
the skew to the file server's clock, whether a rename re-stamps ctime (the
lock reads a holder's age from it), how long another host's change stays
invisible here, who may use the store and its files, and room.  Each check
is a small function returning verdicts (ok, warn, fail; skip when it could
not run) with the measured figure and what to do; exit status 0 all ok,
1 warnings, 2 failures.

Everything it creates lives in ``PATH/.fssession-doctor-<token>``, reached
only through that directory's descriptor, and is removed at the end, also
on SIGINT/SIGTERM/SIGHUP; leftovers of a doctor killed outright are removed
by the next run once they are ten minutes old.

Modules: ``runner`` (the order of the checks, guarding, clean-up),
``rendezvous`` (two doctors on two hosts), ``_local`` (errnos, rename,
create races), ``_timing`` (stamps, skew, ctime), ``_access`` (users,
modes, the store's files, space), ``_mount``, ``_work`` (the work
directory), ``_verdict``.
"""

from ._context import Options
from ._local import LOCAL_PROCS
from ._verdict import Status, Verdict, exit_code
from .runner import Doctor, terminating_signals

__all__ = ["LOCAL_PROCS", "Doctor", "Options", "Status", "Verdict", "exit_code", "terminating_signals"]
