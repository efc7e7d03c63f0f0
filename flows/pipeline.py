"""The build every publishing flow shares: tokenize, train, write, index, rows, publish, report.

Only wiring: each call below is a task from `tasks.skins`; what passes between them is paths
and small summaries. `mode="update"` continues the published models on the new partitions
only; `mode="rebuild"` trains from scratch on every selected partition.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from shardvec.config import Settings
from shardvec.tasks import quality, skins
from shardvec.tasks.corpus import SourceFile, select_partitions
from shardvec.tasks.ledger import Replay, replay_for_build
from shardvec.tasks.publish import RunLock, new_version_id, read_current, version_dir
from shardvec.flows.progress import RunProgress
from shardvec.flows.artifacts import publish_artifacts
from shardvec.tasks.report import MEASURED, PeakRSS, render_text, step_rows
from shardvec.tasks.partitioned import clusters_for, score_tasks_for
from shardvec.tasks.rows import tile_pairs
from shardvec.tasks.similarity import tile_count
from shardvec.tasks.statements import shard_count
from shardvec.tasks.tokenize import Tokenizer


# the steps every build waits on (progress counts them; vocabulary and merge-rows come on top)
BASE_STEPS = ("tokenize", "train", "project-statements", "write-word-vectors", "index-words", "index-statements",
              "similarity-rows", "recall", "evaluate", "publish")


class QualityGateError(RuntimeError):
    """The run's models fell below the last published ones by more than the configured tolerance."""


def build_and_publish(s: Settings, *, flow: str, mode: str = "update", partitions: list[str] | None = None,
                      start: str | None = None, end: str | None = None, skip_if_nothing_new: bool = True,
                      force: bool = False) -> dict:
    data = s.data
    started = time.perf_counter()
    with RunLock(data), PeakRSS() as flow_mem:
        current = read_current(data)
        found = skins.discover_task(data / "corpus")
        files = [SourceFile(**f) for f in found["files"]]
        done = current["watermark"]["partitions"] if current else []
        sel = select_partitions(sorted({f.partition for f in files}), done, mode=mode,
                                partitions=partitions, start=start, end=end)
        built = _published(data, current).get("ledger", 0)
        replay = replay_for_build(data, current, built, rebuild=mode == "rebuild" or current is None)
        report = {"flow": flow, "mode": mode, "partitions": sel.train, "skipped_files": found["skipped"],
                  "ledger_ops": replay.count, "ledger_new_ops": replay.acknowledged - built}
        if skip_if_nothing_new and current is not None and not sel.train and replay.acknowledged == built:
            return _finish(report, status="nothing new", started=started,
                           message=f"All partitions are in version {current['version']}; nothing to do.")
        if not files:
            return _finish(report, status="nothing to do", started=started,
                           message=f"No input files under {data / 'corpus'}; drop partitions there first.")
        progress = RunProgress(flow, steps=len(BASE_STEPS))
        try:
            report.update(_build(s, data, current, sel, files, replay, mode, flow, progress, force))
        finally:
            progress.close()
        report["progress_steps"] = [progress.done, progress.steps]
    report["peak_rss_mb"] = round(max([flow_mem.peak / (1 << 20)] + [r["peak_rss_mb"] for r in report["steps"]]), 1)
    status = "refused by the quality gate" if report.get("gate") else "published"
    quality.append_history(data, {"flow": flow, "status": status, "version": report["version"],
                                  "statements": report["statements"], "metrics": report["quality"],
                                  "gate": report.get("gate", []), "peak_rss_mb": report["peak_rss_mb"],
                                  "wall_seconds": round(time.perf_counter() - started, 2)})
    report["history"] = quality.history_table(quality.read_history(data, last=10))
    _finish(report, status=status, started=started,
            message="Not published: " + "; ".join(report["gate"]) + ". Investigate the input, or rerun with "
            "--force to publish anyway." if report.get("gate") else None)
    if report.get("gate"):
        raise QualityGateError(report["message"])
    return report


def _build(s: Settings, data: Path, current: dict | None, sel, files, replay: Replay, mode: str, flow: str,
           progress: RunProgress, force: bool) -> dict:
    update = current is not None and mode == "update"
    corpus_files = [f for f in files if f.partition in set(sel.in_version)]
    # the ledger's live additions come after the corpus; the new ones are trained on
    ledger_files = [_ledger_source(data, path, part) for path, part in
                    ((replay.old, "~ledger/old"), (replay.new, "~ledger/new")) if path]
    train_parts = set(sel.train) | {"~ledger/new"}
    steps: dict[str, list[dict]] = {}

    tokenizer = Tokenizer(s.tokenize.min_len, s.tokenize.max_len, s.tokenize.deaccent)
    common = dict(batch_size=s.corpus.batch_size, max_record_bytes=s.corpus.max_record_bytes)
    cache_dir, quarantine = data / "cache" / "tokens", data / "quarantine"
    tok_futures = [skins.tokenize_task.submit(data / f.root, f, cache_dir, quarantine, tokenizer, **common)
                   for f in corpus_files]
    tok_futures += [skins.tokenize_task.submit(data, f, cache_dir, quarantine, tokenizer, **common)
                    for f in ledger_files]
    tok = progress.wait("tokenize", tok_futures)
    steps["tokenize"] = tok
    caches = [t["cache"] for t in tok]
    train_tok = [t for t, f in zip(tok, corpus_files + ledger_files) if f.partition in train_parts]
    train_caches = [t["cache"] for t in train_tok]

    version = new_version_id()
    vdir = version_dir(data, version)
    models, spaces, indexes = vdir / "models", vdir / "spaces", vdir / "index"
    prev_models = data / current["components"]["models"] if update else None
    # word2vec needs only the caches: it starts first and trains beside the vocabulary and LSI
    w = s.word2vec
    w2v = skins.word2vec_task.submit(
        train_caches, models / "word2vec.gensim", vector_size=w.vector_size, window=w.window, min_count=w.min_count,
        max_final_vocab=w.max_final_vocab, epochs=w.epochs, sg=w.sg, workers=w.workers, seed=w.seed,
        previous=prev_models / "word2vec.gensim" if update else None)
    plan = skins.plan_task.submit(tok, vdir / "work" / "plan.npy", data, quarantine, on_duplicate=s.corpus.on_duplicate,
                                  ledger_ops=replay.ops, ledger_caches=len(ledger_files))
    builds_vocab = not (update and not s.vocab.hashing)
    progress.steps = len(BASE_STEPS) + builds_vocab + 1  # + merge-rows (in every rows method but annoy)
    if not builds_vocab:  # a fixed vocabulary is the first build's (LSI cannot grow its terms)
        dct_path = prev_models / "dictionary.gensim"
        _copy_dictionary(dct_path, models / "dictionary.gensim")
    else:  # a first build, or hashed buckets that count this night's words too
        steps["vocabulary"] = [progress.one("vocabulary", skins.vocab_task.submit(
            train_caches if update else caches, models / "dictionary.gensim", max_terms=s.vocab.max_terms,
            no_below=s.vocab.no_below, no_above=s.vocab.no_above, hashing=s.vocab.hashing,
            hash_buckets=s.vocab.hash_buckets, previous=prev_models / "dictionary.gensim" if update else None))]
        dct_path = steps["vocabulary"][0]["dictionary"]
    # LSI: each worker decomposes its share of the documents, then one task merges the parts
    lsi_args = dict(num_topics=s.lsi.num_topics, chunksize=s.lsi.chunksize, power_iters=s.lsi.power_iters,
                    extra_samples=s.lsi.extra_samples, seed=s.index.seed)
    n_docs = sum(t["records"] for t in train_tok)
    n_parts = max(1, min(s.dask.n_workers, -(-n_docs // s.lsi.chunksize)))
    bounds = [round(n_docs * i / n_parts) for i in range(n_parts + 1)]
    lsi_parts = [skins.lsi_part_task.submit(train_caches, dct_path, vdir / "work" / f"lsi-part-{i}",
                                            docs=(bounds[i], bounds[i + 1]), **lsi_args) for i in range(n_parts)]
    lsi = skins.lsi_merge_task.submit(lsi_parts, dct_path, models, **lsi_args,
                                      previous=prev_models / "lsi.gensim" if update else None)
    words_quality = skins.evaluate_words_task.submit(models / "word2vec.gensim", wait_for=[w2v])  # beside LSI
    trained = progress.wait("train", [plan, lsi, w2v])
    steps["plan-statements"], steps["train-lsi"], steps["train-word2vec"] = ([t] for t in trained)
    steps["lsi-parts"] = [p.result() for p in lsi_parts]
    plan_r, lsi_r, w2v_r = trained

    R = s.store.rows_per_shard
    words = skins.words_task.submit(w2v_r["word2vec"], spaces / "words", rows_per_shard=R)
    proj = progress.wait("project-statements", [
        skins.project_task.submit(vdir / "work" / "plan.npy", caches, i, R, models, spaces / "statements")
        for i in range(shard_count(plan_r["statements"], R))])
    steps["project-statements"] = proj
    skins.finish_space_task(spaces / "statements", [_entry(p) for p in proj], dim=s.lsi.num_topics,
                            rows_per_shard=R, normalized=True, meta={"what": "LSI statement vectors"})
    steps["write-word-vectors"] = [progress.one("write-word-vectors", words)]
    for name, dtype in (("words", s.store.words_dtype), ("statements", s.store.statements_dtype)):
        if dtype != "float32":
            skins.restore_task(spaces / name, dtype)

    idx = {name: [skins.index_task.submit(spaces / name, i, indexes / name, n_trees=s.index.n_trees,
                                          seed=s.index.seed) for i in range(n)]
           for name, n in (("words", steps["write-word-vectors"][0]["shards"]), ("statements", len(proj)))}
    rows_dir, sim = vdir / "similarity", s.similarity
    tiles = tile_count(plan_r["statements"], sim.tile_rows)
    rows_method = sim.rows_method(plan_r["statements"])
    progress.steps -= rows_method not in ROWS_METHODS  # annoy rows have no merge step
    if rows_method in ROWS_METHODS:  # needs no index: queued beside the index builds
        scoring, merges = ROWS_METHODS[rows_method](spaces / "statements", vdir / "work" / "rows", rows_dir, tiles,
                                                    plan_r["statements"], s)
    built = {name: progress.wait(f"index-{name}", futures) for name, futures in idx.items()}
    for name, shards in built.items():
        steps[f"index-{name}"] = shards
        skins.finish_index_task(indexes / name, shards, n_trees=s.index.n_trees, search_k=s.index.search_k)
    if rows_method in ROWS_METHODS:
        steps["similarity-rows"] = progress.wait("similarity-rows", scoring)
        rows_shards = steps["merge-rows"] = progress.wait("merge-rows", merges)
    else:
        steps["similarity-rows"] = progress.wait("similarity-rows", [
            skins.rows_task.submit(spaces / "statements", t, rows_dir, k=sim.width, tile_rows=sim.tile_rows,
                                   block_rows=sim.block_rows, method=sim.method, index_dir=indexes / "statements",
                                   search_k=s.index.search_k) for t in range(tiles)])
        rows_shards = steps["similarity-rows"]
    skins.finish_rows_task(rows_dir, rows_shards, k=sim.k, width=sim.width, method=rows_method,
                           rows_per_shard=sim.tile_rows)
    names = ["words", "statements", "similarity rows"]
    recall = progress.wait("recall", [
        skins.index_recall_task.submit(spaces / n, indexes / n, k=10, search_k=s.index.search_k,
                                       sample=s.index.recall_sample, seed=s.index.seed) for n in names[:2]
    ] + [skins.rows_recall_task.submit(spaces / "statements", rows_dir, sample=s.index.recall_sample,
                                       seed=s.index.seed)])
    steps["recall"] = recall

    out = _counts(tok, plan_r, lsi_r, w2v_r, proj)
    out["recall"] = {n: _strip(r) for n, r in zip(names, recall)}
    out["rows_method"] = rows_method
    components = {"models": models, "words": spaces / "words", "statements": spaces / "statements",
                  "words_index": indexes / "words", "statements_index": indexes / "statements", "similarity": rows_dir}

    old = {k: data / v for k, v in current["components"].items()} if current else None
    evaluated = progress.wait("evaluate", [
        words_quality, skins.lsi_spectrum_task.submit(models / "lsi.gensim"),
        skins.drift_task.submit(old, components, data, sample=s.quality.drift_sample, words=s.quality.drift_words)])
    steps["evaluate"] = evaluated
    metrics = {**_strip(evaluated[0]), **_strip(evaluated[1]), **_strip(evaluated[2]),
               "rows_recall_at_10": recall[2]["rows_recall_at_k"],
               "statements_index_recall_at_10": recall[1]["recall_at_k"],
               "words_index_recall_at_10": recall[0]["recall_at_k"]}
    out["quality"] = metrics
    previous = _published_quality(data, current)
    refused = quality.gate(metrics, previous, s.quality.model_dump()) if s.quality.gate else []
    out["version"] = version
    out["steps"] = step_rows(steps)
    if refused and not force:
        out["gate"] = refused
        return out
    if refused:
        out["forced_past_gate"] = refused
    summary = {"created_by": flow, "mode": mode, "counts": {k: out[k] for k in
               ("records", "quarantined", "statements", "terms", "words")}, "quality": metrics,
               "config": s.model_dump(mode="json"), "code_version": _code_version(), "steps": step_rows(steps),
               "ledger": replay.acknowledged}
    steps["publish"] = [progress.one("publish", skins.publish_task.submit(
        data, version, {k: str(v) for k, v in components.items()}, {"partitions": sel.in_version}, summary,
        s.publish.keep_versions))]
    out["steps"] = step_rows(steps)
    out["workers"] = sorted({r.get("worker") for rs in steps.values() for r in rs if r.get("worker")})
    return out


def _exact_rows(space, work, rows_dir, tiles: int, statements: int, s: Settings) -> tuple[list, list]:
    """Each tile against itself, each pair of tiles once, then each tile's rows merged
    (tasks/rows.py): the scoring futures, and the merge futures whose results are the rows' shards."""
    sim = s.similarity
    args = dict(k=sim.width, tile_rows=sim.tile_rows, block_rows=sim.block_rows)
    own = [skins.own_tile_task.submit(space, t, work, **args) for t in range(tiles)]
    pairs = {(i, j): skins.tile_pair_task.submit(space, i, j, work, **args, wait_for=[own[i], own[j]])
             for i, j in tile_pairs(statements, sim.tile_rows)}
    merges = [skins.merge_tile_task.submit(work, t, tiles, rows_dir, k=sim.width,
                                           wait_for=[own[t]] + [f for pair, f in pairs.items() if t in pair])
              for t in range(tiles)]
    return own + list(pairs.values()), merges


def _partitioned_rows(space, work, rows_dir, tiles: int, statements: int, s: Settings) -> tuple[list, list]:
    """Centroids, each shard's nearest clusters, the inverted lists, each task's clusters within
    (the rows' bounds) and across, then each tile's rows gathered (tasks/partitioned.py):
    scoring futures, and merge futures."""
    sim, budget = s.similarity, dict(memory_budget_mb=s.similarity.memory_budget_mb)
    shards = shard_count(statements, s.store.rows_per_shard)
    train = skins.centroids_task.submit(space, work, clusters=clusters_for(statements, sim.cluster_rows),
                                        sample=sim.kmeans_sample, iterations=sim.kmeans_iterations,
                                        seed=s.index.seed, **budget)
    assign = [skins.assign_task.submit(space, i, work, probes=sim.probes, **budget, wait_for=[train])
              for i in range(shards)]
    grouped = skins.group_task.submit(space, work, wait_for=assign)
    n = score_tasks_for(statements, sim.tile_rows, s.dask.n_workers)
    unit = dict(k=sim.width, max_queries=sim.tile_rows, **budget)
    own = [skins.cluster_own_task.submit(space, work, t, n, **unit, wait_for=[grouped]) for t in range(n)]
    bounded = skins.cluster_bounds_task.submit(work, n, statements, wait_for=own)
    scores = [skins.cluster_score_task.submit(space, work, t, n, **unit, wait_for=[bounded]) for t in range(n)]
    merges = [skins.cluster_merge_task.submit(work, t, n, rows_dir, k=sim.width, tile_rows=sim.tile_rows,
                                              statements=statements, wait_for=scores) for t in range(tiles)]
    return [train, *assign, grouped, *own, bounded, *scores], merges


ROWS_METHODS = {"exact": _exact_rows, "partitioned": _partitioned_rows}


def _strip(result: dict) -> dict:
    """A step's own figures, without what `measured` added."""
    return {k: v for k, v in result.items() if k not in MEASURED}


def _published(data: Path, current: dict | None) -> dict:
    """The live version's manifest ({} before the first publish)."""
    if current is None:
        return {}
    manifest = version_dir(data, current["version"]) / "manifest.json"
    return json.loads(manifest.read_text()) if manifest.exists() else {}


def _published_quality(data: Path, current: dict | None) -> dict | None:
    return _published(data, current).get("quality")


def _ledger_source(data: Path, path: Path, partition: str) -> SourceFile:
    st = path.stat()
    return SourceFile(partition, path.relative_to(data).as_posix(), "arrow", st.st_size, st.st_mtime_ns, root=".")


def _entry(p: dict) -> dict:
    return {k: p[k] for k in ("shard", "rows", "vectors", "keys", "sha256")}


def _copy_dictionary(src: Path, dst: Path) -> None:
    import shutil
    dst.parent.mkdir(parents=True, exist_ok=True)
    for f in Path(src).parent.glob(Path(src).name + "*"):
        shutil.copy2(f, dst.parent / f.name.replace(Path(src).name, dst.name))


def _counts(tok, plan, lsi, w2v, proj) -> dict:
    reasons: dict[str, int] = {}
    for t in tok:
        for r, n in t["reasons"].items():
            reasons[r] = reasons.get(r, 0) + n
    if plan["duplicates_rejected"]:
        reasons["duplicate id"] = plan["duplicates_rejected"]
    return {"files": len(tok), "records": sum(t["records"] for t in tok) + sum(t["quarantined"] for t in tok),
            "quarantined": sum(t["quarantined"] for t in tok) + plan["duplicates_rejected"],
            "quarantine_reasons": reasons, "statements": plan["statements"], "terms": lsi["terms"],
            "topics": lsi["topics"], "words": w2v["words"], "similarity_rows": sum(p["rows"] for p in proj),
            "tokens": sum(t["tokens"] or 0 for t in tok)}


def _code_version() -> str:
    from importlib.metadata import PackageNotFoundError, version
    try:
        return version("shardvec")
    except PackageNotFoundError:
        return "unknown"


def _finish(report: dict, *, status: str, started: float, message: str | None = None) -> dict:
    report["status"] = status
    if message:
        report["message"] = message
    report["wall_seconds"] = round(time.perf_counter() - started, 2)
    print(render_text(report))
    try:
        publish_artifacts(report)
    except Exception as exc:  # artifacts are a view; a run never fails for them
        print(f"(could not create Prefect artifacts: {exc})")
    return report
