"""A throwaway PostgreSQL schema per test, so tests never see each other's (or anyone's) rows."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import psycopg
import pytest

from servers import require_postgres


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A control-store URL whose tables live in a fresh schema, dropped afterwards."""
    base = require_postgres()
    schema = f"hw_test_{uuid.uuid4().hex[:12]}"
    yield f"{base}?schema={schema}"
    with psycopg.connect(base, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
