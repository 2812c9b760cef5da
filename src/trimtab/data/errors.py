"""Errors of the market-data layer.

Everything a user can get wrong about data (a missing file, a corrupt download, a bad
column, bars that fail validation) surfaces as a ``DataError`` whose message names the
file and, where it can, the row, symbol and timestamp. Callers such as the CLI catch
``DataError`` and print the message; they never need to show a pandas traceback.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from trimtab.data.validation import DataIssue

#: How many issues a ``DataValidationError`` message lists before summarising the rest.
MESSAGE_ISSUE_LIMIT = 20


class DataError(Exception):
    """A problem with market data or with where it comes from, explained for a person."""


class DataValidationError(DataError):
    """Bars failed validation under the ``fail`` policy.

    ``issues`` holds every error-severity ``DataIssue`` found; the message lists the first
    ``MESSAGE_ISSUE_LIMIT`` of them and says how many more there are.
    """

    def __init__(self, issues: Iterable[DataIssue], *, source: str | None = None) -> None:
        self.issues: list[DataIssue] = list(issues)
        self.source = source
        super().__init__(format_issues(self.issues, source=source))


def format_issues(
    issues: list[DataIssue], *, source: str | None = None, limit: int = MESSAGE_ISSUE_LIMIT
) -> str:
    """A readable multi-line summary: a headline, up to ``limit`` issues, then a count."""
    sources = sorted({i.source for i in issues})
    where = source or (sources[0] if len(sources) == 1 else f"{len(sources)} files")
    n = len(issues)
    lines = [f"{where}: {n} data problem{'s' if n != 1 else ''} found"]
    lines += [f"  - {issue}" for issue in issues[:limit]]
    if n > limit:
        lines.append(f"  ... and {n - limit} more")
    lines.append(
        "Fix the file, or load it with policy='drop' (remove bad rows; CLI: --on-bad-data drop) or "
        "policy='repair' (fix what can be fixed; CLI: --on-bad-data repair); both report what "
        "they changed."
    )
    return "\n".join(lines)
