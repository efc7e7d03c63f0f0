"""The build every publishing flow shares, stage by stage:

    inputs    what the version holds: the corpus partitions, and the ledger's puts
    tokenize  each input file into its token cache
    train     the statement plan, the vocabulary, LSI (parts, then a merge) and word2vec
    write     statement vectors projected with the new LSI, and the word vectors
    search    IVF indexes of both spaces, and every statement's similarity row
    check     recall@10 of the indexes and rows against exact search; quality and drift
    publish   the version made live, with the ledger's newer operations replayed on top

Only wiring: every step is a task from `flows/skins.py` (the Prefect UI shows each one); what
passes between them is paths and small summaries, which each stage gathers into the typed
result the next stages read. What a build trains, on what, continuing which models, is decided
once, before it starts, by `tasks/models/plan.py` (`plan_build`); the stages carry the plan out.

Long because: the stages read one another's typed results, and the rows' task graphs are
wiring too; split, a reader would follow one build through several files.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

from shardvec.config import Settings
from shardvec.flows.executors import Executor, Future
from shardvec.flows.progress import RunProgress
from shardvec.flows import skins
from shardvec.tasks.quality import evaluation
from shardvec.tasks.inputs.corpus import SourceFile
from shardvec.errors import QualityGateError
from shardvec.tasks.storage.layout import Layout, VersionLayout
from shardvec.tasks.storage import ledger
from shardvec.tasks.storage.ledger import Replay
from shardvec.tasks.models.lsi import part_ranges
from shardvec.tasks.models.plan import LEDGER_NEW, LEDGER_OLD, BuildPlan, plan_build
from shardvec.tasks.search.partitioned import clusters_for, merge_groups, score_tasks_for
from shardvec.tasks.storage.datadir import DataDir
from shardvec.tasks.storage.documents import Current, Manifest
from shardvec.tasks.storage.versions import RunLock, new_version_id, sweep_leftovers
from shardvec.tasks.quality.report import MEASURED, PeakRSS, render_text, step_rows
from shardvec.tasks.search.rows import tile_pairs
from shardvec.tasks.search.similarity import tile_count, tile_entries
from shardvec.tasks.models.statements import shard_count
from shardvec.tasks.inputs.tokenize import Tokenizer

GATE_REFUSED = "Not published: "  # starts a gate refusal's message; deploy/automations.yaml matches it


def build_and_publish(
    s: Settings,
    *,
    flow: str,
    mode: str = "update",
    partitions: list[str] | None = None,
    start: str | None = None,
    end: str | None = None,
    skip_if_nothing_new: bool = True,
    force: bool = False,
    executor: Executor,
) -> dict:
    """Plan a build, carry it out and publish it; the run's report. `executor` runs its steps
    (flows/executors.py): OnPrefect in a flow run, InProcess with no Prefect and no Dask."""
    started = time.perf_counter()
    # log_prints: the line reaches the run's log in the UI and the terminal alike
    with RunLock(s.data, s.publish.wait_for_run_seconds, say=print), PeakRSS() as flow_mem:
        sweep_leftovers(s.data)  # what failed runs left, now that none runs
        current = DataDir(s.data).current()
        found = executor.call(skins.discover_task, Layout(s.data).corpus)
        files = [SourceFile(**f) for f in found["files"]]
        plan = plan_build(
            s,
            current,
            _live(s.data, current),
            available=sorted({f.partition for f in files}),
            acknowledged=ledger.acknowledged(s.data, current),
            mode=mode,
            partitions=partitions,
            start=start,
            end=end,
            skip_if_nothing_new=skip_if_nothing_new,
        )
        if plan.changed:
            print(plan.why)
        inputs = read_inputs(s, plan, files, skipped=found["skipped"], executor=executor)
        report = {
            "flow": flow,
            "mode": plan.mode,
            "why": plan.why,
            "partitions": list(plan.train),
            "skipped_files": inputs.skipped,
            "ledger_ops": inputs.replay.count,
            "ledger_new_ops": plan.new_ops,
        }
        if plan.skip:
            return _finish(report, executor, status="nothing new", started=started, message=plan.skip)
        if not files:
            return _finish(
                report,
                executor,
                status="nothing to do",
                started=started,
                message=f"No input files under {Layout(s.data).corpus}; drop partitions there first.",
            )
        build = Build(s, current, plan, flow, executor)
        try:
            report.update(build.run(inputs, force))
        finally:
            build.progress.close()
        report["progress_steps"] = [build.progress.done, build.progress.steps]
    report["peak_rss_mb"] = round(max([flow_mem.peak / (1 << 20)] + [r["peak_rss_mb"] for r in report["steps"]]), 1)
    status = "refused by the quality gate" if report.get("gate") else "published"
    evaluation.append_history(
        s.data,
        {
            "flow": flow,
            "status": status,
            "version": report["version"],
            "statements": report["statements"],
            "metrics": report["quality"],
            "gate": report.get("gate", []),
            "peak_rss_mb": report["peak_rss_mb"],
            "wall_seconds": round(time.perf_counter() - started, 2),
        },
    )
    _finish(
        report,
        executor,
        status=status,
        started=started,
        message=GATE_REFUSED + "; ".join(report["gate"]) + ". Investigate the input, or rerun with "
        "--force to publish anyway."
        if report.get("gate")
        else None,
    )
    if report.get("gate"):
        raise QualityGateError(report["message"])
    return report


# --- what each stage hands on --------------------------------------------------------------
@dataclass(frozen=True)
class Inputs:
    """What the version holds, as its plan says: the files of its partitions, then the ledger's puts."""

    plan: BuildPlan
    corpus: list[SourceFile]
    ledger: list[SourceFile]  # the puts the live version already holds, then the new ones
    replay: Replay
    skipped: list

    @property
    def files(self) -> list[SourceFile]:
        return self.corpus + self.ledger


@dataclass(frozen=True)
class Tokenized:
    files: list[dict]  # tokenize_file's summary of each input file, in `Inputs.files` order
    caches: list[str]  # their token caches, in the same order
    train_caches: list[str]  # those of the files the models learn from
    train_records: int
    records: int
    quarantined: int
    reasons: dict[str, int]  # records quarantined, by reason
    tokens: int


@dataclass(frozen=True)
class Trained:
    statements: int  # rows of the statement plan: one per live id
    duplicates_rejected: int
    dictionary: Path
    terms: int
    topics: int
    word2vec: Path
    words: int
    words_quality: Future  # the word vectors' evaluation, started beside LSI


@dataclass(frozen=True)
class Written:
    statement_shards: int
    statement_rows: int
    word_shards: int


@dataclass(frozen=True)
class Recall:
    words: dict  # index_recall of the words' index
    statements: dict  # index_recall of the statements' index
    rows: dict  # rows_recall of the similarity rows

    def report(self) -> dict[str, dict]:
        return {
            "words": _strip(self.words),
            "statements": _strip(self.statements),
            "similarity rows": _strip(self.rows),
        }

    def metrics(self) -> dict[str, float]:
        return {
            "rows_recall_at_10": self.rows["rows_recall_at_k"],
            "statements_index_recall_at_10": self.statements["recall_at_k"],
            "words_index_recall_at_10": self.words["recall_at_k"],
        }


def read_inputs(s: Settings, plan: BuildPlan, files: list[SourceFile], skipped: list, executor: Executor) -> Inputs:
    """The corpus files of the plan's partitions, and the ledger's ops as input files: compacted
    first (its own step), then replayed as the plan splits them (the caller holds the RunLock)."""
    where = Layout(s.data)
    executor.call(skins.compact_ledger_task, s.data, plan.acknowledged)
    replay = executor.call(
        skins.replay_task, s.data, None, plan.ops_trained_after, rebuild=not plan.update, upto=plan.acknowledged
    )
    puts = [
        _ledger_source(where.root, path, part)
        for path, part in ((replay.old, LEDGER_OLD), (replay.new, LEDGER_NEW))
        if path
    ]
    return Inputs(plan, [f for f in files if f.partition in set(plan.in_version)], puts, replay, skipped)


# --- the stages ------------------------------------------------------------------------------
@dataclass
class Build:
    """One build: what its stages share, and each step's task results for the report."""

    s: Settings
    current: Current | None
    plan: BuildPlan
    flow: str
    executor: Executor
    version: str = field(default_factory=new_version_id)
    steps: dict[str, list[dict]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.where = Layout(self.s.data)
        self.v: VersionLayout = self.where.version(self.version)
        self.progress = RunProgress(self.flow, steps=len(self.planned_steps()), executor=self.executor)

    @property
    def mode(self) -> str:
        return self.plan.mode

    @property
    def update(self) -> bool:
        return self.plan.update

    @cached_property
    def live(self) -> Manifest | None:
        """The live version's manifest (None before the first publish), read once a run."""
        return _live(self.s.data, self.current)

    @property
    def live_summary(self) -> dict:
        """What the live version's build recorded (quality, config, intake): {} before the first."""
        return self.live.summary if self.live else {}

    @property
    def previous_models(self) -> Path | None:
        """The live version's models, which an update continues."""
        return self.where.root / self.plan.previous_models if self.plan.previous_models else None

    @property
    def builds_vocabulary(self) -> bool:
        return self.plan.builds_vocabulary

    def planned_steps(self) -> list[str]:
        """The steps the build waits on, in order: one progress bar each."""
        merges = self.s.similarity.method != "index"  # exact and partitioned rows end with a merge
        return [
            "tokenize",
            *["vocabulary"] * self.builds_vocabulary,
            "train",
            "project-statements",
            "write-word-vectors",
            "index-words",
            "index-statements",
            "similarity-rows",
            *["merge-rows"] * merges,
            "recall",
            "evaluate",
            "publish",
        ]

    def submit(self, step: skins.Step, *args, **kwargs) -> Future:
        return self.executor.submit(step, *args, **kwargs)

    def wait(self, step: str, futures: list[Future]) -> list[dict]:
        """Wait for one step's tasks (a progress bar); their results in submission order."""
        self.steps[step] = self.progress.wait(step, futures)
        return self.steps[step]

    def record(self, step: str, results: list[dict]) -> None:
        """Results waited for within another step, shown as their own row of the report."""
        self.steps[step] = results

    def run(self, inputs: Inputs, force: bool) -> dict:
        tok = self.tokenize(inputs)
        trained = self.train(inputs, tok)
        written = self.write(tok, trained)
        rows_method = self.search(trained, written)
        recall = self.check_recall()
        out = _figures(tok, trained, written) | {"recall": recall.report(), "rows_method": rows_method}
        out["quality"] = metrics = self.evaluate(trained) | recall.metrics()
        out["version"] = self.version
        refused = (
            evaluation.gate(metrics, self.live.quality if self.live else None, self.s.quality.model_dump())
            if self.s.quality.gate
            else []
        )
        out["steps"] = step_rows(self.steps)
        if refused and not force:
            return out | {"gate": refused}
        if refused:
            out["forced_past_gate"] = refused
        self.publish(inputs, out)
        out["steps"] = step_rows(self.steps)
        out["workers"] = sorted({r.get("worker") for rs in self.steps.values() for r in rs if r.get("worker")})
        return out

    def intake_limits(self, inputs: Inputs) -> dict[str, int]:
        """The record size limit each partition of the version is read with: today's for those this
        run takes in (again), the one it was taken in with for those already in. Screening is
        intake's: lowering corpus.max_record_bytes must not drop records a version already holds."""
        before = (
            self.live_summary.get("config", {})
            .get("corpus", {})
            .get("max_record_bytes", self.s.corpus.max_record_bytes)
        )
        kept = self.live_summary.get("intake", {}).get("max_record_bytes", {})
        return {
            p: self.s.corpus.max_record_bytes if p in inputs.plan.train else kept.get(p, before)
            for p in inputs.plan.in_version
        }

    def tokenize(self, inputs: Inputs) -> Tokenized:
        s, where = self.s, self.where
        tokenizer = _tokenizer(s)
        limits = self.intake_limits(inputs)
        files = self.wait(
            "tokenize",
            [
                self.submit(
                    skins.tokenize_task,
                    where.root / f.root,
                    f,
                    where.tokens,
                    where.quarantine,
                    tokenizer,
                    batch_size=s.corpus.batch_size,
                    max_record_bytes=limits.get(f.partition, s.corpus.max_record_bytes),
                )
                for f in inputs.files
            ],
        )
        train = [t for t, f in zip(files, inputs.files) if inputs.plan.trains(f.partition)]
        reasons = dict(sum((Counter(t["reasons"]) for t in files), Counter()))
        return Tokenized(
            files,
            [t["cache"] for t in files],
            [t["cache"] for t in train],
            train_records=sum(t["records"] for t in train),
            records=sum(t["records"] + t["quarantined"] for t in files),
            quarantined=sum(t["quarantined"] for t in files),
            reasons=reasons,
            tokens=sum(t["tokens"] or 0 for t in files),
        )

    def train(self, inputs: Inputs, tok: Tokenized) -> Trained:
        """word2vec needs only the caches: it starts first and trains beside the vocabulary and
        LSI. LSI: each worker decomposes its share of the documents, then one task merges them."""
        s, v, prev = self.s, self.v, self.previous_models
        w = s.word2vec
        w2v = self.submit(
            skins.word2vec_task,
            tok.train_caches,
            v.models / "word2vec.gensim",
            vector_size=w.vector_size,
            window=w.window,
            min_count=w.min_count,
            max_final_vocab=w.max_final_vocab,
            epochs=w.epochs,
            sg=w.sg,
            workers=w.workers,
            seed=w.seed,
            previous=prev / "word2vec.gensim" if prev else None,
        )
        plan = self.submit(
            skins.plan_task,
            tok.files,
            v.plan,
            self.where.root,
            self.where.quarantine,
            on_duplicate=s.corpus.on_duplicate,
            ledger_ops=inputs.replay.ops,
            ledger_caches=len(inputs.ledger),
        )
        dictionary = self.vocabulary(tok)
        lsi_args = dict(
            num_topics=s.lsi.num_topics,
            chunksize=s.lsi.chunksize,
            power_iters=s.lsi.power_iters,
            extra_samples=s.lsi.extra_samples,
            seed=s.index.seed,
        )
        parts = [
            self.submit(skins.lsi_part_task, tok.train_caches, dictionary, v.lsi_part(i), docs=docs, **lsi_args)
            for i, docs in enumerate(part_ranges(tok.train_records, s.dask.n_workers, s.lsi.chunksize))
        ]
        lsi = self.submit(
            skins.lsi_merge_task,
            parts,
            dictionary,
            v.models,
            **lsi_args,
            previous=prev / "lsi.gensim" if prev else None,
        )
        words_quality = self.submit(
            skins.evaluate_words_task, v.models / "word2vec.gensim", **evaluation.evaluation_sets(s), wait_for=[w2v]
        )
        plan_r, lsi_r, w2v_r = self.progress.wait("train", [plan, lsi, w2v])
        self.record("plan-statements", [plan_r])
        self.record("train-lsi", [lsi_r])
        self.record("train-word2vec", [w2v_r])
        self.record("lsi-parts", [p.result() for p in parts])
        return Trained(
            plan_r["statements"],
            plan_r["duplicates_rejected"],
            dictionary,
            lsi_r["terms"],
            lsi_r["topics"],
            Path(w2v_r["word2vec"]),
            w2v_r["words"],
            words_quality,
        )

    def vocabulary(self, tok: Tokenized) -> Path:
        """The dictionary LSI trains with: built from the caches, or the live version's, copied."""
        s, v, prev = self.s, self.v, self.previous_models
        if not self.builds_vocabulary:
            self.executor.call(skins.copy_dictionary_task, prev / "dictionary.gensim", v.models / "dictionary.gensim")
            return prev / "dictionary.gensim"
        built = self.wait(
            "vocabulary",
            [
                self.submit(
                    skins.vocab_task,
                    tok.train_caches if self.update else tok.caches,
                    v.models / "dictionary.gensim",
                    max_terms=s.vocab.max_terms,
                    no_below=s.vocab.no_below,
                    no_above=s.vocab.no_above,
                    hashing=s.vocab.hashing,
                    hash_buckets=s.vocab.hash_buckets,
                    previous=prev / "dictionary.gensim" if prev else None,
                )
            ],
        )
        return Path(built[0]["dictionary"])

    def write(self, tok: Tokenized, trained: Trained) -> Written:
        """Statement vectors projected shard by shard, word vectors beside them; then each space
        stored in its configured dtype."""
        s, v, R = self.s, self.v, self.s.store.rows_per_shard
        words = self.submit(skins.words_task, trained.word2vec, v.words, rows_per_shard=R)
        shards = self.wait(
            "project-statements",
            [
                self.submit(skins.project_task, v.plan, tok.caches, i, R, v.models, v.statements)
                for i in range(shard_count(trained.statements, R))
            ],
        )
        self.submit(
            skins.finish_space_task,
            v.statements,
            [_entry(p) for p in shards],
            dim=trained.topics,
            rows_per_shard=R,
            normalized=True,
            meta={"what": "LSI statement vectors"},
        ).result()
        word_shards = self.wait("write-word-vectors", [words])[0]["shards"]
        for space, dtype in ((v.words, s.store.words_dtype), (v.statements, s.store.statements_dtype)):
            if dtype != "float32":
                self.submit(skins.restore_task, space, dtype).result()
        return Written(len(shards), sum(p["rows"] for p in shards), word_shards)

    def search(self, trained: Trained, written: Written) -> str:
        """The IVF indexes of both spaces and the similarity rows, side by side; the rows' method."""
        s, v, sim = self.s, self.v, self.s.similarity
        spaces = {"words": (v.words, v.words_index), "statements": (v.statements, v.statements_index)}
        indexes = {
            name: [
                self.submit(
                    skins.index_task, space, index, nlist=s.index.nlist, nprobe=s.index.nprobe, seed=s.index.seed
                )
            ]
            for name, (space, index) in spaces.items()
        }
        tiles = tile_count(trained.statements, sim.tile_rows)
        method = sim.rows_method(trained.statements)
        if method in ROWS_METHODS:  # needs no index: queued beside the index builds
            scoring, merges = ROWS_METHODS[method](
                self.executor, v.statements, v.rows_work, v.similarity, tiles, trained.statements, s
            )
        for name, futures in indexes.items():
            self.wait(f"index-{name}", futures)
        if method in ROWS_METHODS:
            self.wait("similarity-rows", scoring)
            rows = tile_entries(self.wait("merge-rows", merges))
        else:  # index: each tile's rows asked of the statements' index
            rows = self.wait(
                "similarity-rows",
                [
                    self.submit(
                        skins.rows_task,
                        v.statements,
                        t,
                        v.similarity,
                        k=sim.width,
                        tile_rows=sim.tile_rows,
                        block_rows=sim.block_rows,
                        method=sim.method,
                        index_dir=v.statements_index,
                        nprobe=s.index.nprobe,
                    )
                    for t in range(tiles)
                ],
            )
        self.submit(
            skins.finish_rows_task,
            v.similarity,
            rows,
            k=sim.k,
            width=sim.width,
            method=method,
            rows_per_shard=sim.tile_rows,
        ).result()
        return method

    def check_recall(self) -> Recall:
        s, v = self.s, self.v
        words, statements, rows = self.wait(
            "recall",
            [
                *(
                    self.submit(
                        skins.index_recall_task,
                        space,
                        index,
                        k=10,
                        nprobe=s.index.nprobe,
                        sample=s.index.recall_sample,
                        seed=s.index.seed,
                        target=s.index.target_recall,
                    )
                    for space, index in ((v.words, v.words_index), (v.statements, v.statements_index))
                ),
                self.submit(
                    skins.rows_recall_task, v.statements, v.similarity, sample=s.index.recall_sample, seed=s.index.seed
                ),
            ],
        )
        return Recall(words, statements, rows)

    def evaluate(self, trained: Trained) -> dict:
        """The word vectors on the standard benchmarks, LSI's spectrum, and the drift from the
        live version."""
        s, v = self.s, self.v
        old = {name: self.where.root / rel for name, rel in self.current.components.items()} if self.current else None
        results = self.wait(
            "evaluate",
            [
                trained.words_quality,
                self.submit(skins.lsi_spectrum_task, v.models / "lsi.gensim"),
                self.submit(
                    skins.drift_task,
                    old,
                    v.components(),
                    self.where.root,
                    sample=s.quality.drift_sample,
                    words=s.quality.drift_words,
                ),
            ],
        )
        return {k: val for r in results for k, val in _strip(r).items()}

    def publish(self, inputs: Inputs, out: dict) -> None:
        summary = {
            "created_by": self.flow,
            "mode": self.mode,
            "counts": {k: out[k] for k in ("records", "quarantined", "statements", "terms", "words")},
            "quality": out["quality"],
            "config": self.s.model_dump(mode="json"),
            # what every cache it was trained on was tokenized with (caches are keyed by it)
            "tokenizer": _tokenizer(self.s).settings(),
            "intake": {"max_record_bytes": self.intake_limits(inputs)},
            "code_version": _code_version(),
            "steps": step_rows(self.steps),
            "ledger": inputs.replay.acknowledged,
        }
        self.wait(
            "publish",
            [
                self.submit(
                    skins.publish_task,
                    self.where.root,
                    self.version,
                    {k: str(p) for k, p in self.v.components().items()},
                    {"partitions": list(inputs.plan.in_version)},
                    summary,
                    self.s.publish.keep_versions,
                )
            ],
        )


def _exact_rows(
    executor: Executor, space, work, rows_dir, tiles: int, statements: int, s: Settings
) -> tuple[list, list]:
    """Each tile against itself, each pair of tiles once, then each tile's rows merged
    (tasks/search/rows.py): the scoring futures, and the merge futures whose results are the rows' shards."""
    sim = s.similarity
    args = dict(k=sim.width, tile_rows=sim.tile_rows, block_rows=sim.block_rows)
    own = [executor.submit(skins.own_tile_task, space, t, work, **args) for t in range(tiles)]
    pairs = {
        (i, j): executor.submit(skins.tile_pair_task, space, i, j, work, **args, wait_for=[own[i], own[j]])
        for i, j in tile_pairs(statements, sim.tile_rows)
    }
    merges = [
        executor.submit(
            skins.merge_tile_task,
            work,
            t,
            tiles,
            rows_dir,
            k=sim.width,
            wait_for=[own[t]] + [f for pair, f in pairs.items() if t in pair],
        )
        for t in range(tiles)
    ]
    return own + list(pairs.values()), merges


def _partitioned_rows(
    executor: Executor, space, work, rows_dir, tiles: int, statements: int, s: Settings
) -> tuple[list, list]:
    """Centroids, each shard's nearest clusters, the inverted lists (kept in the rows' folder for
    adds), each task's clusters within (the rows' bounds) and across, then each tile's rows
    gathered, a group of tiles a task (tasks/search/partitioned.py): scoring futures, and merge futures."""
    sim, budget = s.similarity, dict(memory_budget_mb=s.similarity.memory_budget_mb)
    shards = shard_count(statements, s.store.rows_per_shard)
    train = executor.submit(
        skins.centroids_task,
        space,
        work,
        clusters=clusters_for(statements, sim.cluster_rows),
        sample=sim.kmeans_sample,
        iterations=sim.kmeans_iterations,
        seed=s.index.seed,
        **budget,
    )
    assign = [
        executor.submit(skins.assign_task, space, i, work, probes=sim.probes, **budget, wait_for=[train])
        for i in range(shards)
    ]
    grouped = executor.submit(skins.group_task, space, work, wait_for=assign)
    kept = executor.submit(skins.keep_clusters_task, work, rows_dir, probes=sim.probes, wait_for=[grouped])  # for adds
    n = score_tasks_for(statements, sim.tile_rows, s.dask.n_workers)
    unit = dict(k=sim.width, max_queries=sim.tile_rows, **budget)
    own = [executor.submit(skins.cluster_own_task, space, work, t, n, **unit, wait_for=[grouped]) for t in range(n)]
    bounded = executor.submit(skins.cluster_bounds_task, work, n, statements, wait_for=own)
    scores = [
        executor.submit(skins.cluster_score_task, space, work, t, n, **unit, wait_for=[bounded]) for t in range(n)
    ]
    merges = [
        executor.submit(
            skins.cluster_merge_task,
            work,
            first,
            end,
            n,
            rows_dir,
            k=sim.width,
            tile_rows=sim.tile_rows,
            statements=statements,
            wait_for=scores,
        )
        for first, end in merge_groups(tiles, s.dask.n_workers)
    ]
    return [train, *assign, grouped, kept, *own, bounded, *scores], merges


ROWS_METHODS = {"exact": _exact_rows, "partitioned": _partitioned_rows}


def _strip(result: dict) -> dict:
    """A step's own figures, without what `measured` added."""
    return {k: v for k, v in result.items() if k not in MEASURED}


def _figures(tok: Tokenized, trained: Trained, written: Written) -> dict:
    reasons = dict(tok.reasons)
    if trained.duplicates_rejected:
        reasons["duplicate id"] = trained.duplicates_rejected
    taken = set(tok.train_caches)  # the input this run takes in: its new partitions (all, rebuilding)
    return {
        "files": len(tok.files),
        "records": tok.records,
        "quarantined": tok.quarantined + trained.duplicates_rejected,
        "quarantine_reasons": reasons,
        "quarantined_input": [
            {"source": t["source"], "records": t["quarantined"], "reasons": t["reasons"]}
            for t in tok.files
            if t["quarantined"] and t["cache"] in taken
        ],
        "statements": trained.statements,
        "terms": trained.terms,
        "topics": trained.topics,
        "words": trained.words,
        "similarity_rows": written.statement_rows,
        "tokens": tok.tokens,
    }


def _tokenizer(s: Settings) -> Tokenizer:
    return Tokenizer.from_settings(s.tokenize.model_dump())


def _live(data: Path, current: Current | None) -> Manifest | None:
    """The live version's manifest (None before the first publish, or if it has none)."""
    if current is None:
        return None
    try:
        return DataDir(data).manifest(current.version)
    except FileNotFoundError:
        return None


def _ledger_source(data: Path, path: Path, partition: str) -> SourceFile:
    st = path.stat()
    return SourceFile(partition, path.relative_to(data).as_posix(), "arrow", st.st_size, st.st_mtime_ns, root=".")


def _entry(p: dict) -> dict:
    return {k: p[k] for k in ("shard", "rows", "vectors", "keys", "sha256")}


def _code_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("shardvec")
    except PackageNotFoundError:
        return "unknown"


def _finish(report: dict, executor: Executor, *, status: str, started: float, message: str | None = None) -> dict:
    report["status"] = status
    if message:
        report["message"] = message
    report["wall_seconds"] = round(time.perf_counter() - started, 2)
    print(render_text(report))
    executor.publish_report(report)
    return report
