"""Real text for the tests (and the benchmarks): gensim's Lee corpora, written as a corpus/ of
three partitions in the three input formats. No side effects on import."""

from __future__ import annotations

import json
from pathlib import Path

from gensim.test.utils import datapath

# Two statements that say the same thing in other words; each must be the other's top row.
NEAR_DUPLICATES = (
    ("dup/a", "Firefighters battled huge bushfires across New South Wales as strong winds fanned the flames."),
    ("dup/b", "Across New South Wales firefighters battled the huge bushfires as the strong winds fanned flames."),
)


def lee_lines(name: str = "lee_background.cor") -> list[str]:
    with open(datapath(name), encoding="utf-8", errors="replace") as f:
        return [line.strip() for line in f if line.strip()]


def lee_sentences(name: str = "lee.cor", min_words: int = 6) -> list[str]:
    """The sentences of a Lee corpus of `min_words` words or more."""
    return [s.strip() for line in lee_lines(name) for s in line.split(". ") if len(s.split()) >= min_words]


# Sentences of the Lee test corpus (which the published fixture holds as whole documents): the
# statements that the addition tests add.
SENTENCES = lee_sentences()


def write_corpus(corpus: Path) -> dict[str, Path]:
    """Three partitions in the three formats, from the Lee corpora (real news text)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    bg = lee_lines()
    p1 = corpus / "2026-11-01" / "lee.txt"
    p1.parent.mkdir(parents=True)
    p1.write_text("\n".join(bg[:150]) + "\n", encoding="utf-8")
    p2 = corpus / "2026-11-02" / "lee.jsonl"
    p2.parent.mkdir(parents=True)
    with open(p2, "w", encoding="utf-8") as f:
        for i, line in enumerate(bg[150:], 150):
            f.write(json.dumps({"id": f"bg/{i}", "text": line}) + "\n")
        for id_, text in NEAR_DUPLICATES:
            f.write(json.dumps({"id": id_, "text": text}) + "\n")
        f.write('{"id": "bad/1", "text": "a broken line\n')  # quarantined, the rest goes on
    p3 = corpus / "2026-11-03" / "lee.parquet"
    p3.parent.mkdir(parents=True)
    test = lee_lines("lee.cor")
    pq.write_table(pa.table({"id": [f"test/{i}" for i in range(len(test))], "text": test}), p3)
    return {"text": p1, "jsonl": p2, "parquet": p3}
