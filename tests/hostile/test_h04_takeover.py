"""Attack 4: session takeover by a group member who can write the store but knows no key.

The web app is a real Flask app (fssession.flask) in fss-weba's process,
driven through Flask's test client (one client per browser).  Mallory is a
separate process as fss-mallory.  She finds which file is whose by watching
which file appears when someone logs in (a listing is all she needs).

* copy: she copies the admin's file over her own (files 0660);
* rename: with the 0600 default she cannot read the admin's file, but renames
  it over her own;
* downgrade rollback: she restores an older copy of another user's file,
  taken before the site took that user's role away;
* logout undo: she restores a copy of a user's file after the user logged
  out, and a thief presents the last cookie the user had.  (The copy is
  older than that cookie: a copy of exactly the last version stays
  replayable until absolute_max_age, which NOTES.md's trust boundary says.)
* idle forever: she keeps touching a file whose session was last used long
  ago; a default absolute_max_age must end it.

Each time the app must give a fresh session (a 200, never a 500), never the
other user's (or the old) data.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.hostile.agent import KEY, session_files
from tests.hostile.conftest import Lab, owned_dir
from tests.support.procs import LabProc
from tests.support.users import MALLORY, WEB_A

GROUP_FILES = {"file_mode": 0o660, "dir_mode": 0o770}
DEFAULT_FILES = {"dir_mode": 0o770}  # files keep the 0600 default

# Mallory's hands: copy, rename or touch files in the store.
HANDS = """
import os, shutil, sys
op, *paths = sys.argv[1:]
if op == "copy":  # copy src over dst the way an editor saves: temp file, then rename
    src, dst = paths
    tmp = os.path.join(os.path.dirname(dst), "mallory-tmp")
    shutil.copyfile(src, tmp)
    os.rename(tmp, dst)
elif op == "rename":
    os.rename(*paths)
elif op == "touch":
    os.utime(paths[0])
print("done", flush=True)
"""


class App:
    """The Flask app in fss-weba's process, and the store's files as a listing shows them."""

    def __init__(self, lab: Lab, store: Path, options: dict[str, int]) -> None:
        self.store = store
        config = {
            "SECRET_KEY": KEY,
            "FSSESSION_PATH": str(store),
            "FSSESSION_COOKIE_SECURE": False,
            "FSSESSION_STORE_OPTIONS": options,
        }
        self.proc: LabProc = lab.spawn(WEB_A, ["-m", "tests.hostile.flaskdriver", json.dumps(config)], what="flask")

    def ask(self, **command: Any) -> dict[str, Any]:
        """Send one command, return the answer."""
        self.proc.send(json.dumps(command))
        answer: dict[str, Any] = json.loads(self.proc.readline())
        return answer

    def get(self, client: str, path: str) -> dict[str, Any]:
        """A GET as *client*; a 500 fails the test here and now."""
        answer = self.ask(client=client, get=path)
        assert answer["status"] == 200, f"{client} {path}: {answer} (the app must never 500)\n{self.proc.stderr()}"
        return answer

    def data(self, client: str) -> dict[str, Any]:
        """What the session of *client* holds now."""
        body: dict[str, Any] = self.get(client, "/get")["body"]["data"]
        return body

    def new_file(self, client: str, path: str) -> str:
        """Do a request that creates *client*'s session and return the file that appeared."""
        before = set(session_files(str(self.store)))
        self.get(client, path)
        appeared = set(session_files(str(self.store))) - before
        assert len(appeared) == 1, f"expected one new session file, got {appeared}"
        return str(self.store / appeared.pop())


def mallory(lab: Lab, *args: str) -> None:
    """Mallory does something to the store's files (as fss-mallory)."""
    assert lab.run(MALLORY, HANDS, *args).ok().out.strip() == "done"


@pytest.mark.parametrize(("how", "options"), [("copy", GROUP_FILES), ("rename", DEFAULT_FILES)])
def test_a_file_put_under_another_session_name_does_not_log_in(
    lab: Lab, store_path: Path, how: str, options: dict[str, int]
) -> None:
    app = App(lab, store_path, options)
    admin = app.new_file("admin", "/login?user=admin")
    mine = app.new_file("mallory", "/login?user=mallory")
    assert app.data("mallory") == {"user": "mallory"}
    mallory(lab, how, admin, mine)
    assert app.data("mallory").get("user") != "admin", f"mallory became admin by a {how}"


def test_restoring_an_older_copy_does_not_undo_a_downgrade(lab: Lab, store_path: Path, workspace: Path) -> None:
    app = App(lab, store_path, GROUP_FILES)
    bob = app.new_file("bob", "/set?role=admin")
    stash = owned_dir(lab, workspace / "stash", MALLORY, 0o700)
    mallory(lab, "copy", bob, str(stash / "bob"))
    app.get("bob", "/set?role=user")  # the site takes bob's role away
    assert app.data("bob") == {"role": "user"}
    mallory(lab, "copy", str(stash / "bob"), bob)
    assert app.data("bob").get("role") != "admin", "an old copy gave back the role the site took away"


def test_restoring_a_copy_does_not_undo_a_logout(lab: Lab, store_path: Path, workspace: Path) -> None:
    app = App(lab, store_path, GROUP_FILES)
    bob = app.new_file("bob", "/set?user=bob")
    stash = owned_dir(lab, workspace / "stash", MALLORY, 0o700)
    mallory(lab, "copy", bob, str(stash / "bob"))
    app.get("bob", "/set?cart=1")
    stolen = app.ask(client="bob", cookie=True)["cookie"]
    assert stolen
    app.get("bob", "/logout")
    mallory(lab, "copy", str(stash / "bob"), bob)
    app.ask(client="thief", set_cookie=stolen)
    assert app.data("thief").get("user") != "bob", "a restored copy brought a logged-out session back"


# A web node that last saw the session long ago: created (and, with the
# injected clock, stamped) AGO seconds in the past.
CREATE_OLD = """
import sys, time
from tests.hostile.agent import emit, shared_store
root, ago, absolute = sys.argv[1], float(sys.argv[2]), sys.argv[3]
options = {} if absolute == "default" else {"absolute_max_age": int(absolute)}
store = shared_store(root, max_age=1800, clock=lambda: time.time() - ago, **options)
emit(store.create({"user": "bob"}))
"""

LOAD = """
import sys
from tests.hostile.agent import emit, shared_store
root, absolute, sid = sys.argv[1:]
options = {} if absolute == "default" else {"absolute_max_age": int(absolute)}
emit(shared_store(root, max_age=1800, **options).load(sid))
"""


def test_touching_a_file_does_not_keep_a_session_alive_for_ever(lab: Lab, store_path: Path) -> None:
    ago = 10 * 365 * 86400.0  # last used ten years ago, on a store with the default settings
    before = set(session_files(str(store_path)))
    sid = json.loads(lab.run(WEB_A, CREATE_OLD, str(store_path), str(ago), "default").ok().out)
    (name,) = set(session_files(str(store_path))) - before
    mallory(lab, "touch", str(store_path / name))
    loaded = json.loads(lab.run(WEB_A, LOAD, str(store_path), "default", sid).ok().out)
    assert loaded is None, f"a session last used {ago:.0f} s ago lives on because its file was touched: {loaded}"
