"""The bundled sample corpus, made from real text that ships with gensim (no download).

Three partitions, one per input format: the Lee background corpus (plain text), the first
half of gensim's English Wikipedia sample split into paragraphs (JSON Lines, with two
deliberately bad records to show quarantine at work), and the second half plus the Lee test
corpus (Parquet).
"""

from __future__ import annotations

import bz2
import json
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from gensim.corpora.wikicorpus import extract_pages, filter_wiki
from gensim.test.utils import datapath

WIKI = "enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2"
PARTITIONS = ("2026-11-20", "2026-11-21", "2026-11-22")


def wiki_paragraphs(min_words: int = 6) -> Iterator[tuple[str, str]]:
    """(id, paragraph) of the Wikipedia sample's articles, streamed from the bz2 dump."""
    with bz2.open(datapath(WIKI)) as dump:
        for title, text, _page_id in extract_pages(dump):
            n = 0
            for para in filter_wiki(text).split("\n"):
                para = " ".join(para.split())
                if len(para.split()) >= min_words and not para.startswith(("{", "|", "!")):
                    n += 1
                    yield f"wiki/{title.replace(' ', '_')}/{n}", para


def build_sample(corpus_dir: Path, wiki_limit: int | None = None) -> dict:
    """Write the sample partitions under `corpus_dir`; returns what was written."""
    corpus_dir = Path(corpus_dir)
    written = {}
    first = corpus_dir / PARTITIONS[0] / "lee_background.txt"
    first.parent.mkdir(parents=True, exist_ok=True)
    with open(datapath("lee_background.cor"), "rb") as src, open(first, "wb") as dst:
        for line in src:
            dst.write(line)
    written[str(first)] = sum(1 for _ in open(first, "rb"))

    second = corpus_dir / PARTITIONS[1] / "wikipedia.jsonl"
    third = corpus_dir / PARTITIONS[2] / "wikipedia_and_lee.parquet"
    second.parent.mkdir(parents=True, exist_ok=True)
    third.parent.mkdir(parents=True, exist_ok=True)
    schema = pa.schema([("id", pa.string()), ("text", pa.string())])
    n_json = n_parquet = 0
    batch: list[tuple[str, str]] = []
    with open(second, "w", encoding="utf-8") as jf, pq.ParquetWriter(third, schema) as pw:
        # Articles alternate between the two partitions, streamed (the dump is never held whole).
        for id_, text in wiki_paragraphs():
            article = id_.rsplit("/", 1)[0]
            if wiki_limit is not None and n_json + n_parquet >= wiki_limit:
                break
            if hash_article(article) % 2 == 0:
                jf.write(json.dumps({"id": id_, "text": text}, ensure_ascii=False) + "\n")
                n_json += 1
                if n_json == 10:  # two deliberately bad records: the run quarantines them, goes on
                    jf.write('{"id": "broken/1", "text": "this line is not valid JSON\n')
                    jf.write(json.dumps({"id": "empty/1", "text": "   "}) + "\n")
            else:
                batch.append((id_, text))
                n_parquet += 1
                if len(batch) == 1000:
                    pw.write_table(_table(batch, schema))
                    batch = []
        with open(datapath("lee.cor"), encoding="utf-8", errors="replace") as f:
            batch += [(f"lee/{n}", line.strip()) for n, line in enumerate(f, 1) if line.strip()]
        n_parquet += sum(1 for id_, _ in batch if id_.startswith("lee/"))
        pw.write_table(_table(batch, schema))
    written[str(second)] = n_json + 2
    written[str(third)] = n_parquet
    return written


def hash_article(article: str) -> int:
    return sum(article.encode())  # stable across processes, unlike hash()


def _table(rows: list[tuple[str, str]], schema: pa.Schema) -> pa.Table:
    return pa.table({"id": [r[0] for r in rows], "text": [r[1] for r in rows]}, schema=schema)
