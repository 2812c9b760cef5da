"""Stores for the journal's tests: a SQLite file, and a real PostgreSQL server when
``TRIMTAB_TEST_POSTGRES_URL`` names one (``.ci/run`` starts one and sets it). With ``CI``
set a missing server fails the PostgreSQL tests instead of skipping them. Under
pytest-xdist each worker has a database of its own (``<database>_<worker>``, created on
first use), so that one worker emptying its schema never drops another's tables."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
import sqlalchemy as sa

from trimtab.journal.store import Store

POSTGRES_URL = os.environ.get("TRIMTAB_TEST_POSTGRES_URL")
#: The pytest-xdist worker running this process ("gw0", "gw1", ...), None without xdist.
WORKER = os.environ.get("PYTEST_XDIST_WORKER")
_worker_url: str | None = None


def _url_of_this_worker(url: str) -> str:
    """``url`` itself without xdist, else the worker's own database on the same server,
    created (owned by the URL's role, which .ci/postgres.sh gives CREATEDB) when missing."""
    global _worker_url
    if not WORKER:
        return url
    if _worker_url is None:
        base = sa.engine.make_url(url)
        name = f"{base.database}_{WORKER}"
        engine = sa.create_engine(base, isolation_level="AUTOCOMMIT")
        try:
            with engine.connect() as conn:
                found = conn.execute(
                    sa.text("SELECT 1 FROM pg_database WHERE datname = :n"), {"n": name}
                ).scalar()
                if not found:
                    conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
        finally:
            engine.dispose()
        _worker_url = base.set(database=name).render_as_string(hide_password=False)
    return _worker_url


def empty_postgres() -> str:
    """The test server's URL, its public schema emptied (tables and version table)."""
    if not POSTGRES_URL:
        if os.environ.get("CI"):
            pytest.fail(
                "CI is set but TRIMTAB_TEST_POSTGRES_URL is not: the store's PostgreSQL tests "
                "must run in CI (.ci/run starts a server and sets it)"
            )
        pytest.skip("no PostgreSQL server: set TRIMTAB_TEST_POSTGRES_URL (see .ci/postgres.sh)")
    url = _url_of_this_worker(POSTGRES_URL)
    engine = sa.create_engine(url)
    try:
        with engine.begin() as conn:
            conn.execute(sa.text("DROP SCHEMA IF EXISTS public CASCADE"))
            conn.execute(sa.text("CREATE SCHEMA public"))
    finally:
        engine.dispose()
    return url


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
