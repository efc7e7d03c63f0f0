"""Building a version's models: the vocabulary, TF-IDF + LSI, word2vec, the projection of the
statements into the LSI space, and vectors imported and exported in other tools' formats; and
the plan of a build (which partitions and ledger ops train, from which models it continues).
"""

from shardvec.tasks.models.vocab import build_dictionary, copy_dictionary, load_dictionary
from shardvec.tasks.models.lsi import idf_vector, lsi_part, merge_lsi, part_ranges, train_lsi
from shardvec.tasks.models.word2vec import train_word2vec, write_word_space
from shardvec.tasks.models.plan import LEDGER_NEW, LEDGER_OLD, BuildPlan, plan_build
from shardvec.tasks.models.statements import plan_statements, project_shard, shard_count
from shardvec.tasks.models.vectors_io import (
    Vectors,
    detect_format,
    export_projector,
    export_word2vec,
    import_vectors,
    to_keyed_vectors,
)

__all__ = [
    "build_dictionary",
    "load_dictionary",
    "idf_vector",
    "part_ranges",
    "train_lsi",
    "train_word2vec",
    "write_word_space",
    "LEDGER_NEW",
    "LEDGER_OLD",
    "BuildPlan",
    "plan_build",
    "plan_statements",
    "project_shard",
    "shard_count",
    "Vectors",
    "detect_format",
    "export_projector",
    "export_word2vec",
    "import_vectors",
    "to_keyed_vectors",
    "lsi_part",
    "merge_lsi",
    "copy_dictionary",
]
