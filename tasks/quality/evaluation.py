"""Is what a run is about to publish any good? Evaluation, night-over-night drift, the gate.

Word vectors are scored on the English evaluation sets that ship with gensim's test data
(analogies from questions-words.txt, restricted to the vocabulary; Spearman correlation with
human judgements on WordSim-353 and SimLex-999) and on the sets a user names in [quality]
word_pairs and analogies, in any language; each with its coverage of the vocabulary. A set
covering too little of it (a corpus in another language, another domain) is reported as "not
enough coverage" and left out of the gate: its score would be noise. The LSI model is scored by
its singular-value spectrum. Drift compares the new version with the published one: how many
similarity rows changed, their mean Jaccard overlap, and the words whose neighbours moved most.
The gate refuses a run whose metrics dropped more than the configured tolerances.

Long because: the figures a run reports and the gate that judges them are defined together, so
the gate's names and the report's always match.
"""

from __future__ import annotations

import json
import math
import os
import stat
import warnings
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from shardvec.tasks.storage.layout import Layout
from shardvec.tasks.search.similarity import SimilarityRows
from shardvec.tasks.storage.spaces import Space
from shardvec.tasks.search.topk import empty_topk, exact_topk, fold_block, unit_rows

QUESTIONS, WORDSIM, SIMLEX = "questions-words.txt", "wordsim353.tsv", "simlex999.txt"
# metric -> the config knob holding how far it may drop against the last published run
GATED = {
    "analogy_accuracy": "analogy_drop",
    "wordsim353_spearman": "wordsim353_drop",
    "simlex999_spearman": "simlex999_drop",
    "rows_recall_at_10": "rows_recall_drop",
    "statements_index_recall_at_10": "index_recall_drop",
}
# metric -> the knob holding the absolute value it may not fall below, first run included
FLOORS = {"rows_recall_at_10": "rows_recall_floor"}


def _finite(x) -> float | None:
    x = float(x)
    return None if math.isnan(x) else round(x, 4)


# Below this many covered pairs or questions a score is noise, whatever the share.
MIN_ITEMS = 10
KNOBS = {"word pairs": "word_pairs", "analogies": "analogies"}  # the [quality] knobs of each kind
# The built-in sets: (name, kind, file in gensim's test data, the metric the gate and history know it by)
BUILT_IN = [
    ("questions-words", "analogies", QUESTIONS, "analogy_accuracy"),
    ("wordsim353", "word pairs", WORDSIM, "wordsim353_spearman"),
    ("simlex999", "word pairs", SIMLEX, "simlex999_spearman"),
]


def evaluate_models(word2vec_path: Path, lsi_path: Path, **sets) -> dict:
    """Analogy accuracy and word-pair correlations of the word vectors; the LSI spectrum."""
    return {**evaluate_words(word2vec_path, **sets), **lsi_spectrum(lsi_path)}


def evaluation_sets(s) -> dict:
    """The evaluate_words arguments of settings `s`: the user's sets as absolute paths (relative
    ones are in the data directory), and the coverage a set needs to count."""

    def where(files):
        return [str(s.data / f) for f in files]  # an absolute f stays itself

    return {
        "word_pairs": where(s.quality.word_pairs),
        "analogies": where(s.quality.analogies),
        "min_coverage": {
            "word pairs": s.quality.word_pairs_min_coverage,
            "analogies": s.quality.analogies_min_coverage,
        },
    }


def evaluate_words(
    word2vec_path: Path,
    *,
    word_pairs: list[str] = (),
    analogies: list[str] = (),
    min_coverage: dict[str, float] | None = None,
) -> dict:
    """Each evaluation set's score and coverage of the vocabulary (`evaluation`, one entry a
    set, saying whether it was used); the built-in ones also under their own metric names
    (None when not used), as the gate and the history know them. `min_coverage`: the coverage a
    set needs to count, by kind ("word pairs", "analogies")."""
    # gensim is imported here, not at the top: the flow process imports this module and never
    # evaluates, and gensim (with scipy.stats) is ~0.9 s of every run's start
    from gensim.models import Word2Vec
    from gensim.test.utils import datapath

    wv = Word2Vec.load(str(word2vec_path), mmap="r").wv
    sets = [(name, kind, datapath(f), metric) for name, kind, f, metric in BUILT_IN]
    sets += [(_set_name(f), "word pairs", f, None) for f in word_pairs]
    sets += [(_set_name(f), "analogies", f, None) for f in analogies]
    out, evaluation, built_in = {}, [], {}
    for name, kind, path, metric in sets:
        floor = (min_coverage or {}).get(kind, 0.0)
        entry = _evaluate_set(wv, name, kind, path, floor) | {"built_in": metric is not None}
        evaluation.append(entry)
        if metric is not None:
            out[metric] = entry["score"] if entry["used"] else None
            built_in[metric] = entry
    questions, ws, sl = (built_in[m] for m in ("analogy_accuracy", "wordsim353_spearman", "simlex999_spearman"))
    return out | {
        "analogy_coverage": questions["coverage"],
        "wordsim353_oov": round(1 - ws["coverage"], 4),
        "simlex999_oov": round(1 - sl["coverage"], 4),
        "evaluation": evaluation,
    }


def _set_name(path: str) -> str:
    return Path(path).stem


# An evaluation set is read to its end, line by line: a larger file is no evaluation set.
MAX_SET_BYTES = 64 << 20


def _refused(path: str) -> str | None:
    """Why the file at `path` is not read as an evaluation set, in a sentence, or None: a FIFO
    would block the worker reading it for good, and /dev/zero fill its memory."""
    try:
        st = os.stat(path)
    except OSError:
        return None  # gone or unreadable: reported as opening it fails
    if not stat.S_ISREG(st.st_mode):
        return f"{path} is not a regular file (a FIFO, a device or a folder), so it was not read; name a text file"
    if st.st_size > MAX_SET_BYTES:
        return (
            f"{path} is {st.st_size:,} bytes, over the {MAX_SET_BYTES >> 20} MB an evaluation set may have, "
            "so it was not read; name a smaller file"
        )
    return None


def _evaluate_set(wv, name: str, kind: str, path: str, min_coverage: float) -> dict:
    """One set's score (accuracy of analogies, Spearman of word pairs), its coverage (share of its
    questions or pairs whose words all have vectors), and whether it counts."""
    unreadable, refused = None, _refused(path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # scipy warns on constant input for tiny vocabularies
        try:
            if refused:
                covered, asked, score = 0, 0, None
            elif kind == "analogies":
                correct, covered, asked = analogies(wv, path)
                score = correct / covered if covered else None
            else:
                covered, asked, score = _word_pairs(wv, path)
        except Exception as exc:  # a user's file that gensim cannot read (gone, not UTF-8, a broken
            # .xz, a line it chokes on): the set is left out, never a failed night
            unreadable, covered, asked, score = f"{type(exc).__name__}: {exc}", 0, 0, None
    coverage = round(covered / asked, 4) if asked else 0.0
    entry = {
        "set": name,
        "kind": kind,
        "file": str(path),
        "items": asked,
        "covered": covered,
        "coverage": coverage,
        "score": None if score is None else _finite(score),
    }
    if refused:
        why = refused
    elif unreadable:
        why = f"{path} could not be read ({unreadable}): a UTF-8 text file, plain or .gz/.bz2/.xz, is expected"
    elif not asked:
        why = f"no {kind} read from {path}"
    elif covered < MIN_ITEMS or coverage < min_coverage:
        why = (
            f"not enough coverage ({covered} of {asked} {kind} have every word in the vocabulary, "
            f"{coverage:.1%}; quality.{KNOBS[kind]}_min_coverage is {min_coverage:.0%})"
        )
    elif entry["score"] is None:
        why = "no score (every covered pair scored alike)"
    else:
        why = None
    metric = "accuracy" if kind == "analogies" else "Spearman"
    entry["used"] = why is None
    entry["summary"] = (
        why + ": left out of the gate"
        if why
        else f"{metric} {entry['score']}, coverage {coverage:.1%} ({covered} of {asked} {kind})"
    )
    return entry


def _word_pairs(wv, path: str) -> tuple[int, int, float | None]:
    """(covered, read, Spearman) of a word-pair file, as gensim's evaluate_word_pairs reads it
    (tab-separated word, word, score; case-insensitive), none covered being an answer too."""
    try:
        _, spearman, oov = wv.evaluate_word_pairs(path)
    except ValueError:  # gensim: "No valid similarity judgements found" (none covered)
        return 0, _pairs_in(path), None
    read = _pairs_in(path)
    return round(read * (1 - oov / 100)), read, spearman.statistic


def _pairs_in(path: str) -> int:
    """Lines of a word-pair file gensim reads as a pair with a score."""
    from gensim import utils  # smart_open, as gensim reads the set: .gz, .bz2 and .xz too

    n = 0
    with utils.open(path, "r", encoding="utf-8") as f:
        for line in f:
            parts = line.split("\t")
            if line.startswith("#") or len(parts) != 3:
                continue
            try:
                float(parts[2])
            except ValueError:
                continue
            n += 1
    return n


# Score cells (questions x vocabulary) of one block of analogies: 16 MB of scores, whatever the vocabulary.
ANALOGY_CELLS = 1 << 22


def analogies(wv, path: str, restrict_vocab: int = 300_000, cells: int = ANALOGY_CELLS) -> tuple[int, int, int]:
    """(correct, covered, asked) of the analogies in `path`, answered as gensim's
    `evaluate_word_analogies` answers them (case-insensitive, the vocabulary's first
    `restrict_vocab` words, 3CosAdd, its first top-5 candidate that is not a question word),
    but a block of questions per matrix product instead of one `most_similar` each, the block
    sized so that its scores stay within `cells` however large the vocabulary (about half
    gensim's CPU time on the 4k-9k-word vocabularies of the tests; the counts equal gensim's,
    tests/integration/test_quality.py)."""
    keys = wv.index_to_key[:restrict_vocab]
    upper = [k.upper() for k in keys]
    index = {u: i for i, u in reversed(list(enumerate(upper)))}  # a word's most frequent casing
    questions, asked = [], 0
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.startswith(":"):
                continue
            asked += 1
            words = line.upper().split()
            if len(words) == 4 and all(w in index for w in words):
                questions.append([index[w] for w in words])
    if not questions:
        return 0, 0, asked
    q = np.asarray(questions, dtype=np.int64)
    unit = unit_rows(np.asarray(wv.vectors[: len(keys)], dtype=np.float32))
    correct, block = 0, max(1, cells // len(keys))  # 512 questions a block on 8k words
    for at in range(0, len(q), block):
        a, b, c, expected = q[at : at + block].T
        scores = (unit[b] + unit[c] - unit[a]) @ unit.T
        rows = np.arange(len(a))
        for col in (a, b, c):  # most_similar leaves out the words it was given
            scores[rows, col] = -np.inf
        top, _ = fold_block(*empty_topk(len(a), 5), 0, scores, 5)
        for i, cand in enumerate(top):
            ignore = {upper[a[i]], upper[b[i]], upper[c[i]]}
            predicted = None
            for j in cand[cand >= 0]:  # gensim's loop: the first candidate that is not a question word
                predicted = upper[j]
                if predicted not in ignore:
                    break
            correct += predicted == upper[expected[i]]
    return correct, len(q), asked


def lsi_spectrum(lsi_path: Path) -> dict:
    """How much of the corpus' energy the top LSI topics hold."""
    from gensim.models import LsiModel

    s = LsiModel.load(str(lsi_path), mmap="r").projection.s
    energy = s**2 / (s**2).sum()
    return {
        "lsi_energy_top10": round(float(energy[:10].sum()), 4),
        "lsi_energy_top50": round(float(energy[:50].sum()), 4),
        "lsi_singular_values": [round(float(x), 4) for x in s[:20]],
    }


def drift(old: dict | None, new: dict, data: Path, *, sample: int = 2000, words: int = 1000, seed: int = 0) -> dict:
    """How much the new version moved against the published one (`old`, `new`: components)."""
    if old is None:
        return {}
    try:
        return _drift(old, new, Path(data), sample=sample, words=words, seed=seed)
    except Exception as exc:  # a damaged live version must not block the rebuild that repairs it
        return {
            "drift_skipped": f"the published version could not be read ({type(exc).__name__}: {exc}); "
            "drift against it was not measured"
        }


def _drift(old: dict, new: dict, data: Path, *, sample: int, words: int, seed: int) -> dict:
    o_space, n_space = Space(data / old["statements"]), Space(data / new["statements"])
    o_rows, n_rows = SimilarityRows(data / old["similarity"]), SimilarityRows(data / new["similarity"])
    rng = np.random.default_rng(seed)
    picks = rng.choice(len(n_space), size=min(sample, len(n_space)), replace=False)
    jaccards = []
    for r in picks:
        key = n_space.key(int(r))
        o = o_space.find(key)
        if o is None:
            continue
        new_keys = {n_space.key(int(x)) for x in n_rows.row(int(r))[0] if x >= 0}
        old_keys = {o_space.key(int(x)) for x in o_rows.row(o)[0] if x >= 0}
        jaccards.append(len(new_keys & old_keys) / max(len(new_keys | old_keys), 1))
    moved = _words_moved(Space(data / old["words"]), Space(data / new["words"]), words)
    j = np.array(jaccards)
    return {
        "rows_compared": len(j),
        "rows_changed_share": round(float((j < 1).mean()), 4) if len(j) else None,
        "rows_mean_jaccard": round(float(j.mean()), 4) if len(j) else None,
        "words_moved_most": moved,
    }


def _words_moved(old: Space, new: Space, n: int, k: int = 10) -> list[dict]:
    """Among the n most frequent words of both, the (at most 10) whose k nearest neighbours changed
    most; a word whose neighbours are all the same (Jaccard 1.0) did not move and is not listed."""
    common, o_rows, n_rows = [], [], []
    for r, key in enumerate(new.keys()):
        o = old.find(key)
        if o is not None:
            common.append(key), o_rows.append(o), n_rows.append(r)
        if len(common) == n:
            break
    if not common:
        return []
    o_nb, _ = exact_topk(old, old.vectors_at(o_rows), k, exclude=np.array(o_rows))
    n_nb, _ = exact_topk(new, new.vectors_at(n_rows), k, exclude=np.array(n_rows))
    out = []
    for word, a, b in zip(common, o_nb, n_nb):
        a_keys, b_keys = {old.key(int(x)) for x in a if x >= 0}, {new.key(int(x)) for x in b if x >= 0}
        out.append({"word": word, "jaccard": round(len(a_keys & b_keys) / max(len(a_keys | b_keys), 1), 3)})
    return sorted((d for d in out if d["jaccard"] < 1), key=lambda d: (d["jaccard"], d["word"]))[:10]


def gate(metrics: dict, previous: dict | None, tolerances: dict) -> list[str]:
    """Why this run must not publish (empty: it may): each metric below its floor, and each
    gated metric that dropped more than its tolerance against the last published run."""
    reasons = []
    for metric, knob in FLOORS.items():
        now = metrics.get(metric)
        if now is not None and knob in tolerances and now < tolerances[knob]:
            reasons.append(f"{metric} is {now}, below quality.{knob}={tolerances[knob]}")
    if not previous:
        return reasons
    for metric, knob in GATED.items():
        now, before = metrics.get(metric), previous.get(metric)
        if now is None or before is None:
            continue
        if before - now > tolerances[knob]:
            reasons.append(f"{metric} fell from {before} to {now}, more than quality.{knob}={tolerances[knob]}")
    # the user's own sets, each against its score of the last run that used it (by file)
    before_sets = {e["file"]: e for e in previous.get("evaluation", []) if e.get("used")}
    for e in metrics.get("evaluation", []):
        old = before_sets.get(e["file"])
        if e.get("built_in") or not e.get("used") or old is None:
            continue
        knob = "analogy_drop" if e["kind"] == "analogies" else "word_pairs_drop"
        if old["score"] - e["score"] > tolerances[knob]:
            reasons.append(
                f"{e['set']} ({e['kind']}) fell from {old['score']} to {e['score']}, more than "
                f"quality.{knob}={tolerances[knob]}"
            )
    return reasons


def append_history(data: Path, entry: dict) -> None:
    """One line per run (published or refused), fsynced: the trend `shardvec history` prints."""
    path = Layout(data).history
    line = json.dumps({"at": datetime.now(timezone.utc).isoformat(timespec="seconds"), **entry}) + "\n"
    with open(path, "a", encoding="utf-8") as f:
        f.write(line)
        f.flush()
        os.fsync(f.fileno())


def read_history(data: Path, last: int | None = None) -> list[dict]:
    path = Layout(data).history
    if not path.exists():
        return []
    with open(path, encoding="utf-8") as f:
        lines = [json.loads(line) for line in f if line.strip()]
    return lines[-last:] if last else lines


TREND = [
    ("wordsim353_spearman", "ws353"),
    ("simlex999_spearman", "simlex"),
    ("analogy_accuracy", "analogy"),
    ("rows_recall_at_10", "rows r@10"),
    ("rows_mean_jaccard", "rows jacc"),
]


def history_table(entries: list[dict]) -> str:
    """The trend as fixed-width text (the terminal) or a markdown table (the UI)."""
    head = ["at", "flow", "status", "version", "statements"] + [label for _, label in TREND]
    rows = [head]
    for e in entries:
        m = e.get("metrics", {})
        rows.append(
            [
                e["at"][:16],
                e.get("flow", ""),
                e.get("status", ""),
                (e.get("version") or "")[:22],
                str(e.get("statements", "")),
            ]
            + ["" if m.get(k) is None else f"{m[k]:.3f}" for k, _ in TREND]
        )
    return "\n".join("| " + " | ".join(r) + " |" for r in [rows[0], ["---"] * len(head)] + rows[1:])
