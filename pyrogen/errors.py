"""Errors that pyrogen raises for bad input; the command line prints them in one or two lines."""

from collections.abc import Sequence

__all__ = [
    "ConfigError",
    "ContractError",
    "DataError",
    "PyrogenError",
    "RunDirError",
    "format_rows",
]


class PyrogenError(Exception):
    """Base class: a problem with the user's input that a message can explain (exit code 2)."""


class ContractError(PyrogenError):
    """A model/guide pair breaks the contract (names the offending site)."""


class DataError(PyrogenError):
    """A data set or data file cannot be used (names the file, the rows)."""


class ConfigError(PyrogenError):
    """An option or configuration value is invalid (names the option)."""


class RunDirError(PyrogenError):
    """A run directory is missing, incomplete or would be overwritten."""


def format_rows(rows: Sequence[int], limit: int = 3) -> str:
    """``"rows 3, 17, 42 (and 5 more)"`` for the first ``limit`` of the indices ``rows``."""
    shown = ", ".join(str(int(r)) for r in rows[:limit])
    more = f" (and {len(rows) - limit} more)" if len(rows) > limit else ""
    return f"{'row' if len(rows) == 1 else 'rows'} {shown}{more}"
