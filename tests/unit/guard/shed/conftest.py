"""Fixtures for the load-shedder tests."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from shed_harness import Harness

from headway.core import ManualClock
from headway.guard.shed import LoadShedder


@pytest.fixture
def harness(clock: ManualClock) -> Callable[[LoadShedder], Harness]:
    """Builds a :class:`Harness` around a shedder, on the test's manual clock."""

    def build(shedder: LoadShedder) -> Harness:
        return Harness(shedder, clock)

    return build
