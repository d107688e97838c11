"""Errors a user can fix.

Every error raised for bad input is an :class:`EnsembleDistillError`; its message names the
problem *and* the fix in one line. The CLI prints it without a traceback and exits with code 2.
"""


class EnsembleDistillError(Exception):
    """Base class: a problem with the user's input, config, data or files."""


class ConfigError(EnsembleDistillError):
    """Unknown key, wrong type or unknown name in a configuration."""


class DataError(EnsembleDistillError):
    """Missing, truncated, malformed or tampered data files."""


class ChecksumError(DataError):
    """A file's digest differs from the published one."""


class CheckpointError(EnsembleDistillError):
    """A checkpoint that is missing, malformed or does not match what it claims to be."""
