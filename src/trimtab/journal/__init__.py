"""Persistence of decisions, orders, fills and snapshots."""

from trimtab.journal.files import OUTPUT_FILES, write_run

__all__ = ["OUTPUT_FILES", "write_run"]
