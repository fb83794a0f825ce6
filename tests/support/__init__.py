"""Test-support code that is not a pytest plugin: the hostile-directory lab (real users, real processes)."""
