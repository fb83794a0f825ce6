"""Run Django's own session-backend tests against ``fssession.django`` (a process of its own).

``python -m tests.web.django_upstream --tests DIR --path SESSIONS`` where *DIR*
holds Django's ``tests/sessions_tests`` package for the installed Django (from
Django's source distribution: the wheel does not ship its tests; see
``tests/web/test_django_upstream.py``, which fetches it).  Prints one JSON
line: how many tests ran, and each failure, error and skip with its reason.

What runs, with ``SESSION_ENGINE = "fssession.django"``:

* ``SessionTestsMixin``, the contract every Django session backend passes,
  with ``backend`` set to this engine (sync and async tests);
* ``SessionMiddlewareTests``, Django's middleware over the configured engine.

A test is skipped here only for a documented difference of this engine
(``SKIPS``, each with its reason).
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import unittest
from pathlib import Path
from typing import Any

# Upstream tests of this engine that cannot pass because the engine differs on
# purpose; each reason names the difference (see fssession/django.py).
SKIPS: dict[str, str] = {
    "test_empty_session_saved": (
        "reads the emptied session back from the database backend's table (Session.objects.get); this engine "
        "keeps sessions in files, and test_web_django.py::test_an_emptied_session_is_saved_empty checks the "
        "same through the store"
    ),
}


def configure(tests_dir: Path, sessions: Path) -> None:
    """Settings for Django's session tests, with this engine as the session engine."""
    import django
    from django.conf import settings

    sys.path.insert(0, str(tests_dir))
    settings.configure(
        SECRET_KEY="upstream-tests-secret-key-0123456789",
        INSTALLED_APPS=[
            "django.contrib.contenttypes",
            "django.contrib.sessions",
            "fssession.django_checks",
            "sessions_tests",  # Django's test package: its models must be installed to import its tests
        ],
        DATABASES={"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}},
        SESSION_ENGINE="fssession.django",
        FSSESSION_PATH=str(sessions),
        USE_TZ=True,
        ALLOWED_HOSTS=["testserver"],
        MIDDLEWARE=[],
    )
    django.setup()


def suite() -> unittest.TestSuite:
    """The upstream test classes, bound to this engine."""
    from django.test import SimpleTestCase
    from sessions_tests.tests import SessionMiddlewareTests, SessionTestsMixin  # type: ignore[import-not-found]

    from fssession.django import SessionStore

    class FSSessionEngineTests(SessionTestsMixin, SimpleTestCase):  # type: ignore[misc]
        backend = SessionStore

    class FSSessionMiddlewareTests(SessionMiddlewareTests):  # type: ignore[misc]
        pass

    loader = unittest.TestLoader()
    found = unittest.TestSuite()
    for cls in (FSSessionEngineTests, FSSessionMiddlewareTests):
        for name, reason in SKIPS.items():
            if hasattr(cls, name):
                setattr(cls, name, unittest.skip(reason)(getattr(cls, name)))
        found.addTests(loader.loadTestsFromTestCase(cls))
    return found


def run() -> dict[str, Any]:
    """Run the suite in Django's test environment (test databases included); a summary."""
    from django.test.runner import DiscoverRunner

    runner = DiscoverRunner(verbosity=0, interactive=False)
    runner.setup_test_environment()
    databases = runner.setup_databases()
    try:
        stream = io.StringIO()
        result = unittest.TextTestRunner(stream=stream, verbosity=2).run(suite())
    finally:
        runner.teardown_databases(databases)
        runner.teardown_test_environment()
    return {
        "ran": result.testsRun,
        "failures": [[test.id(), trace] for test, trace in result.failures],
        "errors": [[test.id(), trace] for test, trace in result.errors],
        "skipped": [[test.id(), reason] for test, reason in result.skipped],
        "unexpected_successes": [test.id() for test in result.unexpectedSuccesses],
        "log": stream.getvalue()[-4000:],
    }


def main() -> None:
    """Parse the arguments, run, print the summary as one JSON line."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--tests", required=True, type=Path, help="the directory holding sessions_tests/")
    parser.add_argument("--path", required=True, type=Path, help="the session directory to use")
    opts = parser.parse_args()
    configure(opts.tests, opts.path)
    print(json.dumps(run()))


if __name__ == "__main__":
    main()
