"""Where things live and how they are written: durable files, the data directory's layout, vector
spaces (sharded memmaps and their key index), the ledger of acknowledged changes, the versions
and CURRENT (the publish protocol), and the runs working on a data directory. `DataDir` is the
way in: its layout, its locks, and CURRENT and the manifests as typed documents (documents.py).

Everything else stands on it; it imports no other package of shardvec.

The data directory on an object store, for readers on other machines: objects (the seam: get,
put-if-absent, checked uploads and downloads over fsspec) and remote (push, the log of commits,
the readers' local cache).
"""

from shardvec.tasks.storage.atomic import (
    atomic_path,
    fit_name,
    fsync_dir,
    fsync_tree,
    map_npy,
    save_npy,
    sha256_file,
    unique_stamp,
    write_json,
)
from shardvec.tasks.storage.layout import COMPONENTS, Layout, VersionLayout, not_a_link
from shardvec.tasks.storage.keys import key_hash, key_hashes
from shardvec.tasks.storage.lookup import lookup
from shardvec.tasks.storage.spaces import (
    DTYPES,
    ShardWriter,
    Space,
    SpaceWriter,
    UnknownKeyError,
    by_shard,
    convert_space,
    finish_space,
    restore_as,
    shard_name,
    write_shard,
)
from shardvec.tasks.storage.ledger import (
    Ledger,
    LedgerError,
    OPS,
    Op,
    Replay,
    acknowledged,
    compact_ledger,
    ops_from,
    replay_for_build,
)
from shardvec.tasks.storage.documents import (
    Additions,
    Current,
    DamagedCurrentError,
    DamagedManifestError,
    Manifest,
    NotPublishedError,
    inside,
)
from shardvec.tasks.storage.locks import LockedError, PublishLock, RunLock
from shardvec.tasks.storage.datadir import DataDir
from shardvec.tasks.storage.versions import (
    new_version_id,
    prepare,
    record_live,
    retain,
    sweep_leftovers,
    were_live,
)

from shardvec.tasks.storage.objects import DamagedObjectError, ObjectStore, ObjectStoreError, is_url
from shardvec.tasks.storage.remote import default_cache, latest, log_key, push, sync
from shardvec.tasks.storage.runs import dead_runs, register

__all__ = [
    "DamagedObjectError",
    "ObjectStore",
    "ObjectStoreError",
    "is_url",
    "default_cache",
    "latest",
    "log_key",
    "push",
    "sync",
    "atomic_path",
    "fit_name",
    "fsync_dir",
    "fsync_tree",
    "map_npy",
    "save_npy",
    "sha256_file",
    "unique_stamp",
    "write_json",
    "COMPONENTS",
    "Layout",
    "VersionLayout",
    "not_a_link",
    "key_hash",
    "key_hashes",
    "lookup",
    "DTYPES",
    "ShardWriter",
    "Space",
    "SpaceWriter",
    "UnknownKeyError",
    "by_shard",
    "convert_space",
    "finish_space",
    "shard_name",
    "write_shard",
    "Ledger",
    "LedgerError",
    "OPS",
    "Op",
    "Replay",
    "ops_from",
    "replay_for_build",
    "acknowledged",
    "compact_ledger",
    "Additions",
    "Current",
    "DamagedCurrentError",
    "DamagedManifestError",
    "DataDir",
    "Manifest",
    "LockedError",
    "NotPublishedError",
    "PublishLock",
    "RunLock",
    "inside",
    "new_version_id",
    "prepare",
    "record_live",
    "retain",
    "sweep_leftovers",
    "were_live",
    "dead_runs",
    "register",
    "restore_as",
]
