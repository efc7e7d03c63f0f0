"""What a build will do, decided in one place: `plan_build` -> `BuildPlan`.

A nightly, a backfill and a rebuild differ only in their plan: whether the published models
are continued ("update") or new ones trained from scratch ("rebuild"), and why; which corpus
partitions the version holds and which of them the models learn from; which acknowledged
ledger ops the version holds and which of them are new to the models; and whether the
vocabulary is built. The pipeline (flows/pipeline.py) carries the plan out and decides nothing
of this itself. Plain Python over small values: the caller reads CURRENT and the live manifest
(typed: tasks/storage/documents.py), the corpus folder names and the ledger's last acknowledged
seq, and hands them in.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from shardvec.config import Settings
from shardvec.tasks.inputs.corpus import select_partitions
from shardvec.tasks.inputs.tokenize import Tokenizer
from shardvec.tasks.storage.documents import Current, Manifest

# The settings a model is made with for good: an update continues the live models as they are,
# so a change of one of these is only honoured by training new models. (section, knob)
SHAPING = (("lsi", "num_topics"), ("vocab", "hashing"), ("vocab", "hash_buckets"), ("word2vec", "vector_size"))

# the ledger's puts (ids whose last op is an add or replace), read as two more input files after
# the corpus partitions: those the live models already learned from, and the new ones
LEDGER_OLD, LEDGER_NEW = "~ledger/old", "~ledger/new"


@dataclass(frozen=True)
class BuildPlan:
    mode: str  # "update": continue the live models; "rebuild": train new ones from scratch
    why: str  # one sentence: why this mode
    in_version: tuple[str, ...]  # the corpus partitions the new version holds
    train: tuple[str, ...]  # those the models learn from (all of them when rebuilding)
    acknowledged: int  # the ledger ops the version holds: every op up to this seq
    built: int  # those the live version's shards hold already (0 before the first publish)
    continues: str | None  # the live version whose models an update continues
    previous_models: str | None  # its models folder, relative to the data directory
    builds_vocabulary: bool  # False: the live version's fixed vocabulary is kept
    changed: tuple[str, ...] = ()  # the settings shaping the models that changed since the live ones
    skip: str | None = None  # why nothing is built this time (None: build)

    @property
    def update(self) -> bool:
        return self.mode == "update"

    @property
    def ops_trained_after(self) -> int:
        """The ledger's puts acknowledged after this seq are new to the models and trained on;
        those up to it are in the version but were learned already."""
        return self.built if self.update else 0

    @property
    def new_ops(self) -> int:
        return self.acknowledged - self.built

    @property
    def nothing_new(self) -> bool:
        return not self.train and self.acknowledged == self.built

    def trains(self, partition: str) -> bool:
        """Whether the models learn from the input files of `partition` (LEDGER_NEW: the ledger's
        puts after `ops_trained_after`)."""
        return partition in self.train or partition == LEDGER_NEW


def plan_build(
    s: Settings,
    current: Current | None,
    live: Manifest | None,
    *,
    available: list[str],
    acknowledged: int,
    mode: str = "update",
    partitions: list[str] | None = None,
    start: str | None = None,
    end: str | None = None,
    skip_if_nothing_new: bool = False,
) -> BuildPlan:
    """The plan of one build.

    Args:
        s: The run's settings.
        current: CURRENT (None before the first publish).
        live: The manifest of the version CURRENT names (None if there is none).
        available: The partitions under corpus/ (folder names).
        acknowledged: The last acknowledged ledger seq (tasks/storage/ledger.py `acknowledged`).
        mode: What was asked for: "update" or "rebuild".
        partitions, start, end: Which partitions to bring in (none of them: all).
        skip_if_nothing_new: A nightly: build nothing when no partition and no ledger op is new.
    """
    if mode not in ("update", "rebuild"):
        raise ValueError(f"mode {mode!r}: a build either updates or rebuilds")
    changed = _shaping_changes(s, live) if current is not None and mode == "update" else []
    if current is None:
        mode, why = "rebuild", "No version is published yet: the first build trains its models from scratch."
    elif changed:
        mode, why = (
            "rebuild",
            (
                f"Settings that shape the models changed since version {current.version} was "
                f"trained ({'; '.join(changed)}): this run rebuilds the models from scratch."
            ),
        )
    elif mode == "rebuild":
        why = "A rebuild was asked for: new models are trained from scratch on every partition."
    else:
        why = f"An update continues the models of version {current.version} on what is new."
    done = current.partitions if current else []
    selection = select_partitions(available, done, mode=mode, partitions=partitions, start=start, end=end)
    continued = current if mode == "update" else None  # an update always has a live version
    plan = BuildPlan(
        mode=mode,
        why=why,
        in_version=tuple(selection.in_version),
        train=tuple(selection.train),
        acknowledged=acknowledged,
        built=live.ledger if live else 0,
        continues=continued.version if continued else None,
        previous_models=continued.components["models"] if continued else None,
        # LSI cannot grow a fixed vocabulary's terms, so an update keeps the live one; hashed
        # buckets count each night's words too
        builds_vocabulary=continued is None or s.vocab.hashing,
        changed=tuple(changed),
    )
    if skip_if_nothing_new and current is not None and plan.nothing_new:
        return replace(plan, skip=f"All partitions are in version {current.version}; nothing to do.")
    return plan


def _shaping_changes(s: Settings, live: Manifest | None) -> list[str]:
    """What changed since the live models were trained, of what shapes them: the tokenizer (the
    manifest's record of it) and the SHAPING knobs of its config. Unknown (an older manifest
    without them): no change."""
    if not live:
        return []
    changes = []
    trained = Tokenizer.from_settings(live.tokenizer).settings()
    today = Tokenizer.from_settings(s.tokenize.model_dump()).settings()
    if trained != today:
        changes.append(f"tokenize {trained} -> {today}")
    config = live.summary.get("config", {})
    for section, knob in SHAPING:
        before, now = config.get(section, {}).get(knob), getattr(getattr(s, section), knob)
        if knob == "hash_buckets" and not (s.vocab.hashing and config.get("vocab", {}).get("hashing")):
            continue  # buckets count only where both the live and this run's vocabulary are hashed
        if before is not None and before != now:
            changes.append(f"{section}.{knob} {before} -> {now}")
    return changes
