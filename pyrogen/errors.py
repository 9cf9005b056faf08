"""Errors that pyrogen raises for bad input; the command line prints them in one or two lines."""

__all__ = ["PyrogenError", "ContractError", "DataError", "ConfigError", "RunDirError"]


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
