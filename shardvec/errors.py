"""The base of every error shardvec raises for a user to act on.

Each subclass also keeps the built-in type it refines (a missing version is still a
FileNotFoundError, a bad setting a ValueError), so callers that catch those keep working; the
CLI catches `ShardvecError` once and prints its message, a sentence that says the fix.
"""


class ShardvecError(Exception):
    """Something the user can fix; the message says how."""


class UsageError(ValueError, ShardvecError):
    """An argument no verb takes; the message names the ones it does."""


class QualityGateError(RuntimeError, ShardvecError):
    """The run's models fell below the last published ones by more than the configured tolerance."""
