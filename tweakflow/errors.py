"""Exceptions raised by tweakflow.

Every error a user can provoke with bad input is a `TweakflowError` whose
message names the file (or config key) and the problem.
"""

__all__ = ["TweakflowError", "InputError", "ConfigError", "AlignmentError", "RefcatError", "OutputError"]


class TweakflowError(Exception):
    """Base class for errors raised by tweakflow with a user-facing message."""


class InputError(TweakflowError):
    """An input file (image, catalog, association, catfile) is unusable."""


class ConfigError(TweakflowError):
    """A configuration value is invalid."""


class AlignmentError(TweakflowError):
    """Alignment could not be computed."""


class RefcatError(TweakflowError):
    """A reference catalog could not be read or retrieved."""


class OutputError(TweakflowError):
    """An output could not be written (disk full, no permission...)."""
