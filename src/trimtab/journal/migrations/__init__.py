"""Alembic migrations of the store's schema, run by ``trimtab.journal.store.Store.open``."""
