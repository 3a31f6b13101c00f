"""User-facing errors.

Every error a user can fix (bad input file, unknown option, missing run directory) is raised as a
:class:`PrismrecError`. The CLI prints its message as one paragraph and exits non-zero; anything else
is a bug and shows a traceback only with ``--debug``.
"""

from __future__ import annotations


class PrismrecError(Exception):
    """An error the user can act on; the message says what is wrong, where, and how to fix it."""


class DataError(PrismrecError):
    """Input data that cannot be read or is inconsistent (names the file, the row or column, the fix)."""

    def __init__(self, message: str, *, file: str | None = None, row: int | None = None,
                 column: str | None = None, fix: str | None = None):
        self.file, self.row, self.column, self.fix = file, row, column, fix
        where = []
        if file:
            where.append(f"file {file}")
        if row is not None:
            where.append(f"row {row}")
        if column:
            where.append(f"column '{column}'")
        text = message if not where else f"{', '.join(where)}: {message}"
        if fix:
            text += f" Fix: {fix}"
        super().__init__(text)


class ConfigError(PrismrecError):
    """An unknown or invalid configuration key or value."""


class OutputError(PrismrecError, OSError):
    """An output path that cannot be written: a file where a folder should be, a read-only or full disk.

    It is also an ``OSError`` (with the original ``errno``), so code that handles failed writes as
    ``OSError`` (the service answers 5xx) keeps working.
    """
