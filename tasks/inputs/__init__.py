"""What comes in: the corpus's partitions streamed in fixed-size batches (bad records to
quarantine), and their tokens, cached once per file in Arrow.
"""

from shardvec.tasks.inputs.corpus import (
    BATCH_BYTES,
    BadInputError,
    FORMATS,
    Quarantine,
    Record,
    Selection,
    SourceFile,
    batched,
    check_op,
    discover,
    inside_quarantine,
    one_line,
    read_records,
    select_partitions,
    short_repr,
)
from shardvec.tasks.inputs.tokenize import TokenStream, Tokenizer, iter_batches, open_cache, tokenize_file

__all__ = [
    "BATCH_BYTES",
    "BadInputError",
    "FORMATS",
    "Quarantine",
    "Record",
    "Selection",
    "SourceFile",
    "batched",
    "check_op",
    "discover",
    "inside_quarantine",
    "one_line",
    "read_records",
    "select_partitions",
    "short_repr",
    "TokenStream",
    "Tokenizer",
    "iter_batches",
    "open_cache",
    "tokenize_file",
]
