"""Stores for the journal's tests: a SQLite file, and a real PostgreSQL server when
``TRIMTAB_TEST_POSTGRES_URL`` names one (``.ci/run`` starts one and sets it). With ``CI``
set a missing server fails the PostgreSQL tests instead of skipping them."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
import sqlalchemy as sa

from trimtab.journal.store import Store

POSTGRES_URL = os.environ.get("TRIMTAB_TEST_POSTGRES_URL")


def empty_postgres() -> str:
    """The test server's URL, its public schema emptied (tables and version table)."""
    if not POSTGRES_URL:
        if os.environ.get("CI"):
            pytest.fail(
                "CI is set but TRIMTAB_TEST_POSTGRES_URL is not: the store's PostgreSQL tests "
                "must run in CI (.ci/run starts a server and sets it)"
            )
        pytest.skip("no PostgreSQL server: set TRIMTAB_TEST_POSTGRES_URL (see .ci/postgres.sh)")
    engine = sa.create_engine(POSTGRES_URL)
    try:
        with engine.begin() as conn:
            conn.execute(sa.text("DROP SCHEMA IF EXISTS public CASCADE"))
            conn.execute(sa.text("CREATE SCHEMA public"))
    finally:
        engine.dispose()
    return POSTGRES_URL


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request: pytest.FixtureRequest, tmp_path) -> str:
    """A URL of an empty database, SQLite then PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'runs' / 'store.db'}"
    return empty_postgres()


@pytest.fixture
def store(store_url: str) -> Iterator[Store]:
    s = Store.open(store_url)
    try:
        yield s
    finally:
        s.close()
