"""Settings: every tunable once, validated with a message that names it."""

from __future__ import annotations

import pytest

from fssession.settings import LockSettings, ReapSettings, StoreSettings


@pytest.mark.parametrize(
    ("make", "word"),
    [
        (lambda: LockSettings(lease=0), "lease"),
        (lambda: LockSettings(lease=-5), "lease"),
        (lambda: LockSettings(lease=float("nan")), "lease"),
        (lambda: LockSettings(lease=2, fs_slack=2), "fs_slack"),
        (lambda: LockSettings(lease=10, max_lease=5), "max_lease"),
        (lambda: LockSettings(poll_interval=0), "poll_interval"),
        (lambda: LockSettings(mode=0o10000), "mode"),
        (lambda: StoreSettings(max_age=0), "max_age"),
        (lambda: StoreSettings(absolute_max_age=-1), "absolute_max_age"),
        (lambda: StoreSettings(max_size=0), "max_size"),
        (lambda: StoreSettings(file_mode="0600"), "file_mode"),  # type: ignore[arg-type]
        (lambda: ReapSettings(jobs=0), "jobs"),
        (lambda: ReapSettings(grace=1.0), "grace"),
        (lambda: ReapSettings(temp_age=10), "temp_age"),
        (lambda: ReapSettings(max_seconds=-1), "max_seconds"),
    ],
)
def test_bad_values_name_the_setting(make: object, word: str) -> None:
    with pytest.raises(ValueError, match=word):
        make()  # type: ignore[operator]


def test_defaults_are_written_once() -> None:
    lock = LockSettings()
    assert (lock.lease, lock.fs_slack, lock.lease_cap) == (30.0, 1.0, 120.0)
    store = StoreSettings()
    assert (store.max_age, store.absolute_max_age, store.touch_interval) == (1800, 30 * 86400, 60.0)
    assert StoreSettings(max_age=40 * 86400).absolute_max_age == 40 * 86400
    assert StoreSettings(absolute_max_age=None).absolute_max_age is None
    assert ReapSettings().grace == 60.0


def test_flat_keywords_build_nested_settings() -> None:
    s = StoreSettings.from_keywords(lease=5.0, max_lease=50.0, fs_slack=0.5, dir_mode=0o770, max_age=10)
    assert (s.lock.lease, s.lock.max_lease, s.lock.fs_slack, s.lock.mode, s.max_age) == (5.0, 50.0, 0.5, 0o770, 10)
    assert "lease" in StoreSettings.option_names() and "lock" not in StoreSettings.option_names()
    with pytest.raises(TypeError, match="bogus"):
        StoreSettings.from_keywords(bogus=1)
