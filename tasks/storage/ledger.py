"""The ledger: every acknowledged add, replace and delete, in order, kept for good.

Statements that did not come from `corpus/` live here and nowhere else durable. Every
nightly, backfill and rollback replays the ledger on top of the corpus partitions, so
folding an addition into the shards never discards it. The files:

  ledger/pending-<seq>.arrow  one batch (columns seq, op, id, text), written and fsynced
                            before CURRENT names `seq`, renamed to ops-<seq>.arrow once it
                            does. A pending file above CURRENT's `ledger` is the leftover of a
                            crash before the acknowledgement: never replayed, and removed.
  ledger/ops-<seq>.arrow    one acknowledged batch. One above CURRENT's `ledger` (CURRENT
                            restored from a backup) is still acknowledged: the next add
                            replays it and numbers after it, so no seq is ever reused.
  ledger/upto-<seq>.arrow   compaction of every op up to `seq`: the last op of each id, with
                            the seq it was acknowledged at. Replaying "last op per id" gives
                            the same live statements as replaying every op, so compacting
                            loses nothing a replay or a rollback needs.
  ledger/puts-<n>-<a>-<b>.arrow  derived for a build: the ids whose last op up to <n> is an
                            add or replace acknowledged in (a, b], with their texts, in order

The precedence rule, everywhere: the corpus partitions first (duplicate ids among them follow
`corpus.on_duplicate`), then the ledger's ops in the order they were acknowledged. An id with
an op in the ledger is decided by its last op; a corpus record never overrides it.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

from shardvec.tasks.storage.atomic import fsync_dir, write_with
from shardvec.errors import ShardvecError
from shardvec.tasks.storage.documents import Current
from shardvec.tasks.storage.layout import Layout, not_a_link

SCHEMA = pa.schema([("seq", pa.int64()), ("op", pa.string()), ("id", pa.string()), ("text", pa.string())])
OPS = ("add", "replace", "delete")
_NAME = re.compile(r"^(ops|upto|pending)-(\d{12,})\.arrow$")


class LedgerError(RuntimeError, ShardvecError):
    """A ledger file that cannot be read: it holds acknowledged operations, so nothing goes on."""


@dataclass(frozen=True)
class Op:
    op: str  # "add", "replace" or "delete"
    id: str
    text: str | None = None

    @property
    def is_put(self) -> bool:
        return self.op != "delete"


class Ledger:
    def __init__(self, data: Path):
        self.dir = not_a_link(Layout(data).ledger, LedgerError)

    # -- writing ------------------------------------------------------------------------
    def append(self, seq: int, ops: list[Op]) -> Path:
        """Write batch `seq` durably, pending: it is acknowledged once CURRENT names `seq`,
        then `confirm` gives it its final name."""
        table = pa.table(
            {
                "seq": pa.array([seq] * len(ops), pa.int64()),
                "op": pa.array([o.op for o in ops], pa.string()),
                "id": pa.array([o.id for o in ops], pa.string()),
                "text": pa.array([o.text for o in ops], pa.string()),
            },
            schema=SCHEMA,
        )
        return self._write(self.dir / f"pending-{seq:012d}.arrow", table)

    def confirm(self, upto: int) -> None:
        """Settle the pending batches against CURRENT's `upto`: those it names become final,
        those above it were never acknowledged and go."""
        # no fsync of the folder: a rename lost in a crash leaves a pending batch that CURRENT
        # names, which counts as acknowledged all the same and is confirmed again next time
        for kind, seq, path in self._scan():
            if kind == "pending":
                if seq <= upto:
                    os.replace(path, self.dir / f"ops-{seq:012d}.arrow")
                else:
                    path.unlink(missing_ok=True)

    def confirm_one(self, seq: int) -> None:
        """`confirm` for the one batch just acknowledged (no scan of the folder)."""
        try:
            os.replace(self.dir / f"pending-{seq:012d}.arrow", self.dir / f"ops-{seq:012d}.arrow")
        except FileNotFoundError:
            pass  # already confirmed

    def holds(self, seq: int) -> bool:
        """True if batch `seq` is confirmed in its own file."""
        return (self.dir / f"ops-{seq:012d}.arrow").exists()

    def settle(self, current_seq: int) -> int:
        """Confirm or drop pending batches against CURRENT's `ledger`; the last acknowledged seq
        (beyond CURRENT's when CURRENT was restored from an older copy)."""
        self.confirm(current_seq)
        return max(current_seq, self.last_confirmed())

    def last_confirmed(self) -> int:
        """The last seq known acknowledged from the files alone (pending ones are not)."""
        return max((seq for kind, seq, _ in self._scan() if kind != "pending"), default=0)

    def compact(self, upto: int) -> None:
        """Fold every op up to `upto` into one file of the last op per id; delete what it covers."""
        files = self._files(upto)
        if len(files) <= 1:
            return
        self._write(self.dir / f"upto-{upto:012d}.arrow", self.net(upto))
        for kind, seq, path in files:
            if not (kind == "upto" and seq == upto):
                path.unlink(missing_ok=True)
        for p in self.dir.glob("puts-*.arrow"):  # derived from files that are gone
            p.unlink(missing_ok=True)
        fsync_dir(self.dir)

    # -- reading ------------------------------------------------------------------------
    def net(self, upto: int, after: int = 0) -> pa.Table:
        """The last op of each id among the ops acknowledged up to `upto`, keeping those
        acknowledged after `after`, in the order they were acknowledged."""
        tables = [_read(p) for _, _, p in self._files(upto)]
        if not tables:
            return SCHEMA.empty_table()
        table = pa.concat_tables(tables)
        n = len(table)
        # the last occurrence of each id wins: group on id over the reversed table, take the first
        rev = table.take(pa.array(range(n - 1, -1, -1), pa.int64())).append_column(
            "pos", pa.array(range(n - 1, -1, -1), pa.int64())
        )
        last = rev.group_by("id", use_threads=False).aggregate([("pos", "first")])
        keep = pc.sort_indices(last.column("pos_first"))
        table = table.take(last.column("pos_first").take(keep))
        return table.filter(pc.greater(table.column("seq"), after)) if after else table

    def puts(self, upto: int, lo: int, hi: int) -> Path:
        """The puts a build replays: the ids whose last op up to `upto` is an add or
        replace acknowledged in (lo, hi], their texts in the order they were acknowledged."""
        path = self.dir / f"puts-{upto:012d}-{lo:012d}-{hi:012d}.arrow"
        if not path.exists():  # derived and deterministic: an existing one keeps its token cache
            net = self.net(upto, lo)
            net = net.filter(pc.and_(pc.not_equal(net.column("op"), "delete"), pc.less_equal(net.column("seq"), hi)))
            self._write(path, net.select(["id", "text", "seq"]))
        return path

    def _scan(self) -> list[tuple[str, int, Path]]:
        if not self.dir.is_dir():
            return []
        return [(m.group(1), int(m.group(2)), p) for p in self.dir.iterdir() if (m := _NAME.match(p.name))]

    def _files(self, upto: int) -> list[tuple[str, int, Path]]:
        """The files that hold ops up to `upto` (CURRENT's `ledger`, so pending ones up to it are
        acknowledged): the newest compaction, then the later batches in order."""
        found = [f for f in self._scan() if f[1] <= upto]
        base = max((seq for kind, seq, _ in found if kind == "upto"), default=0)
        chosen = [f for f in found if f[0] == "upto" and f[1] == base]
        later = {
            seq: (kind, seq, p)
            for kind, seq, p in sorted(found, key=lambda f: f[0] == "ops")
            if kind != "upto" and seq > base
        }  # a batch both pending and final: the final file
        return chosen + [later[seq] for seq in sorted(later)]

    def check(self, upto: int) -> list[str]:
        """Problems with the files holding ops up to `upto` (empty: all readable)."""
        problems = []
        for _, _, path in self._files(upto):
            try:
                table = _read(path)
                if not table.schema.equals(SCHEMA):
                    problems.append(f"{path} does not have the ledger's columns (seq, op, id, text)")
            except LedgerError as exc:
                problems.append(str(exc))
        return problems

    def _write(self, final: Path, table: pa.Table) -> Path:
        if not self.dir.is_dir():
            self.dir.mkdir(parents=True)
            fsync_dir(self.dir.parent)

        def write(tmp: Path) -> None:
            with pa.ipc.new_file(str(tmp), table.schema) as w:
                w.write_table(table)

        return write_with(final, write)  # temp file, fsync, rename, fsync the folder


def _read(path: Path) -> pa.Table:
    return _open(path).read_all()


def _open(path: Path) -> pa.ipc.RecordBatchFileReader:
    try:
        return pa.ipc.open_file(pa.memory_map(str(path), "r"))
    except (pa.ArrowInvalid, OSError) as exc:
        raise LedgerError(
            f"The ledger file {path} cannot be read ({exc}); it holds acknowledged operations: "
            "restore it from a backup before running again."
        ) from None


def ops_from(table: pa.Table) -> list[Op]:
    return [
        Op(o, i, t)
        for o, i, t in zip(
            table.column("op").to_pylist(), table.column("id").to_pylist(), table.column("text").to_pylist()
        )
    ]


@dataclass(frozen=True)
class Replay:
    """What a build takes from the ledger: the net ops file (for masking corpus records) and the
    puts as input files, split into those the published models saw and the new ones."""

    acknowledged: int  # the last op a build holds (CURRENT's ledger when it started)
    ops: Path | None  # the last op of each id, up to `acknowledged`
    old: Path | None  # puts with seq <= what the live version holds (not trained on again)
    new: Path | None  # puts after it (trained on, like a new partition)
    count: int  # ids the ledger decides


def acknowledged(data: Path, current: Current | None) -> int:
    """The last acknowledged seq a build holds: CURRENT's `ledger`, or beyond it the ops files
    confirmed (CURRENT restored from an older copy); without CURRENT (a first build, or one moved
    aside after damage) every confirmed op."""
    last = Ledger(data).last_confirmed()
    return max(current.ledger, last) if current else last


def compact_ledger(data: Path, upto: int) -> dict:
    """Fold every op up to `upto` into one file (the last op of each id) and remove the derived
    puts of earlier builds. A build calls it under the run lock before `replay_for_build`: it
    discards no operation, only the files a replay no longer needs."""
    ledger = Ledger(data)
    if not upto:
        return {"upto": 0, "files": 0}
    files = len(ledger._files(upto))
    ledger.compact(upto)
    for stale in ledger.dir.glob("puts-*.arrow"):  # derived for an earlier night
        if not stale.name.startswith(f"puts-{upto:012d}-"):
            stale.unlink(missing_ok=True)
    return {"upto": upto, "files": files}


def replay_for_build(
    data: Path, current: Current | None, built: int, rebuild: bool, *, upto: int | None = None
) -> Replay:
    """A build's inputs from the ledger, compacted up to `upto` (default: `acknowledged`) by
    `compact_ledger`: the net ops file, and the puts split at `built` (the last op the live
    version's shards hold; everything is new on a rebuild). It discards nothing: the puts are
    derived files, written once per (upto, split)."""
    ledger = Ledger(data)
    upto = acknowledged(data, current) if upto is None else upto
    if not upto:
        return Replay(0, None, None, None, 0)
    files = ledger._files(upto)
    if len(files) > 1:
        raise RuntimeError(f"The ledger holds {len(files)} files up to op {upto}: compact_ledger first.")
    ops = files[0][2] if files else None
    count = _rows(ops) if ops else 0
    split = 0 if rebuild else built
    old = ledger.puts(upto, 0, split) if split else None
    new = ledger.puts(upto, split, upto)
    return Replay(upto, ops, old if old and _rows(old) else None, new if _rows(new) else None, count)


def _rows(path: Path) -> int:
    reader = _open(path)
    return sum(reader.get_batch(i).num_rows for i in range(reader.num_record_batches))
