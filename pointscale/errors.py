"""Typed exceptions and warnings raised by pointscale.

Every error names the bad value and, where there is one, the fix. The CLI
turns any :class:`PointscaleError` into a one-line message and a non-zero exit
status instead of a traceback.
"""

from __future__ import annotations


class PointscaleError(Exception):
    """Base class of every error pointscale raises on purpose."""


class DataError(PointscaleError):
    """The input data cannot be used as given (missing, empty, malformed)."""


class ConfigError(PointscaleError, ValueError):
    """A configuration value is invalid or inconsistent with the data."""


class DegenerateExperimentError(ConfigError):
    """An experiment's regime cannot measure what it claims (e.g. every repeat is the same trial)."""


class LedgerError(PointscaleError):
    """The sample ledger is unreadable, corrupted or inconsistent."""


class RunLockedError(PointscaleError):
    """Another process holds the run folder's lock."""


class ConvergenceWarning(UserWarning):
    """An optimiser stopped before meeting its tolerance (as in statsmodels)."""


class ExtrapolationWarning(UserWarning):
    """A value was requested outside the range of dataset sizes that was sampled."""


class FinitePoolWarning(UserWarning):
    """A size range reaches so far into a finite pool that the base subsets lose their randomness."""
