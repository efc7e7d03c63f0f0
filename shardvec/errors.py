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


class NothingToTrainError(ValueError, ShardvecError):
    """The corpus gave a model nothing to learn from (no document, no word frequent enough)."""


class DamagedFileError(ValueError, ShardvecError):
    """A file is shorter than, or of another format than, what wrote it says."""


class NotASpaceError(FileNotFoundError, ShardvecError):
    """A folder given as a vector space holds none."""
