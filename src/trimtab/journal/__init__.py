"""Persistence of decisions, orders, fills and snapshots; run folders written atomically."""

from trimtab.journal.files import (
    OUTPUT_FILES,
    RUN_MARKER,
    OutputError,
    check_run_folder,
    is_run_folder,
    write_run,
    write_run_folder,
    write_text_atomic,
)

__all__ = [
    "OUTPUT_FILES",
    "RUN_MARKER",
    "OutputError",
    "check_run_folder",
    "is_run_folder",
    "write_run",
    "write_run_folder",
    "write_text_atomic",
]
