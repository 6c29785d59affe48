"""Shared fixtures: a manual clock for exact time, and recording hooks for asserting events."""

from __future__ import annotations

import pytest

from headway.core import ManualClock, RecordingHooks


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def hooks() -> RecordingHooks:
    return RecordingHooks()


def require_binary(name: str) -> str:
    """Path of an installed server binary a test needs.

    Locally a missing binary skips the test with a reason naming it; under CI (``CI`` set)
    nothing may be skipped, so the test fails instead.
    """
    import os
    import shutil

    path = shutil.which(name)
    if path is None:
        message = f"{name} is not installed (needed by this test)"
        if os.environ.get("CI"):
            pytest.fail(message + "; CI must install it (.ci/run)")
        pytest.skip(message)
    return path
