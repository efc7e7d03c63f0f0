"""Finding similar things in a space: the exact top-k kernel, the approximate index a reader asks,
the similarity rows (exact by tiles, or partitioned by k-means) and their repair as statements
change, and the embedding of a text with a published model. Shared by building a version, changing
a published one, and the reader API.
"""

from shardvec.tasks.search.topk import (
    RowsInRam,
    best_per_row,
    columns_for,
    empty_topk,
    exact_topk,
    fold_block,
    merge_topk,
    recall_at_k,
    score_blocks,
    unit_rows,
)
from shardvec.tasks.search.embed import Embedder, tfidf_matrix
from shardvec.tasks.search.index import (
    AnnoySpaceIndex,
    DamagedIndexError,
    QueryShapeError,
    SpaceIndex,
    build_index,
    index_recall,
    lists_for,
    open_index,
    index_manifest,
)
from shardvec.tasks.search.similarity import SimilarityRows, finish_rows, rows_recall, tile_count, tile_entries
from shardvec.tasks.search.rows import rows_for_tile, tile_pairs
from shardvec.tasks.search.partitioned import Clusters, clusters_for, merge_groups, score_tasks_for
from shardvec.tasks.search.repair import Holders, fill, refilled, repair_rows

__all__ = [
    "RowsInRam",
    "best_per_row",
    "columns_for",
    "empty_topk",
    "exact_topk",
    "fold_block",
    "merge_topk",
    "recall_at_k",
    "score_blocks",
    "unit_rows",
    "Embedder",
    "tfidf_matrix",
    "AnnoySpaceIndex",
    "DamagedIndexError",
    "QueryShapeError",
    "SpaceIndex",
    "build_index",
    "index_recall",
    "lists_for",
    "open_index",
    "index_manifest",
    "SimilarityRows",
    "finish_rows",
    "rows_recall",
    "tile_count",
    "tile_entries",
    "rows_for_tile",
    "tile_pairs",
    "Clusters",
    "clusters_for",
    "merge_groups",
    "score_tasks_for",
    "Holders",
    "fill",
    "refilled",
    "repair_rows",
]
