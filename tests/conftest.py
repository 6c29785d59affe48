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
