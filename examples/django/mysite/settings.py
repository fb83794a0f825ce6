"""Settings of a Django site on fssession: the session part is the last block.

Run two of it on one session directory (each could be on its own node)::

    python3 -m venv venv && venv/bin/pip install 'fssession[django]' gunicorn
    export SECRET_KEY=a-long-random-secret FSSESSION_PATH=/srv/sessions
    venv/bin/python manage.py check
    venv/bin/gunicorn mysite.wsgi --bind 127.0.0.1:8001 --threads 4 &
    venv/bin/gunicorn mysite.wsgi --bind 127.0.0.1:8002 --threads 4 &

``DEBUG=1`` serves plain-HTTP development: the cookie is then not ``Secure``.
"""

import os

SECRET_KEY = os.environ["SECRET_KEY"]  # at least 16 bytes, the same on every node
DEBUG = os.environ.get("DEBUG") == "1"
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]
ROOT_URLCONF = "mysite.urls"
WSGI_APPLICATION = "mysite.wsgi.application"
DATABASES: dict[str, dict[str, str]] = {}  # sessions need no database
USE_TZ = True

INSTALLED_APPS = [
    "django.contrib.sessions",  # manage.py clearsessions
    "fssession.django_checks",  # manage.py check validates the session set-up
]
# A real site keeps CsrfViewMiddleware; this JSON example leaves it out so that
# it can be tried with curl.
MIDDLEWARE = ["django.contrib.sessions.middleware.SessionMiddleware"]

SESSION_ENGINE = "fssession.django"
FSSESSION_PATH = os.environ.get("FSSESSION_PATH")  # the directory every node mounts
SESSION_COOKIE_SECURE = not DEBUG  # Django's default is False: HTTPS sites want True
SESSION_COOKIE_AGE = 8 * 3600  # 8 hours of idleness (Django's default is two weeks)
