"""The scale benchmark's corpus: every entry of GCIDE, the Collaborative International Dictionary
of English (Webster's 1913 + WordNet glosses, GPL), as shipped by Debian's `dict-gcide`.

About 200k entries and 5M tokens of real English, read offline from
/usr/share/dictd/gcide.{index,dict.dz}. One entry (headword, senses, examples) is one
statement. Entry i goes to part i % PARTS, so every part is a fair sample of the alphabet:
a corpus of 1/4 the size is part 0, of 1/2 parts 0-1, the whole all four.

    python -m benchmarks.corpus OUT_DIR        # writes OUT_DIR/part-{0..3}/gcide-{0,1}.jsonl
"""

from __future__ import annotations

import gzip
import json
import re
import sys
from collections.abc import Iterator
from pathlib import Path

DICT = Path("/usr/share/dictd/gcide.dict.dz")
INDEX = Path("/usr/share/dictd/gcide.index")
PARTS = 4
FILES_PER_PART = 2  # so tokenizing a part is two parallel tasks
_B64 = {c: i for i, c in enumerate("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/")}
_SOURCE_TAG = re.compile(
    r"\[(?:1913 Webster|WordNet 1\.5|Webster 1913 Suppl\.|PJC|Century Dict\.|"
    r"Chambers 1881|Syn\. Dict\.|RDH|Accent|Obs\.|R\.)[^\]]*\]"
)
_SPACE = re.compile(r"\s+")


class MissingCorpus(RuntimeError):
    pass


def _b64(s: str) -> int:
    n = 0
    for c in s:
        n = n * 64 + _B64[c]
    return n


def entries() -> Iterator[tuple[str, str]]:
    """(id, text) of every dictionary entry, in file order, streamed from the compressed file."""
    if not DICT.exists() or not INDEX.exists():
        raise MissingCorpus(
            f"{DICT} is missing; install it with `apt-get install dict-gcide` "
            "(Debian's GCIDE dictionary, the benchmark's real-text corpus)."
        )
    spans: dict[int, tuple[int, str]] = {}
    with open(INDEX, encoding="utf-8") as f:
        for line in f:
            head, off, length = line.rstrip("\n").split("\t")[:3]
            if head.startswith("00-"):  # the database's own info entries
                continue
            spans.setdefault(_b64(off), (_b64(length), head))
    pos = 0
    with gzip.open(DICT, "rb") as f:
        for off in sorted(spans):
            length, head = spans[off]
            if off < pos:  # overlapping spans: already read as part of the previous entry
                continue
            f.seek(off)
            text = _SPACE.sub(" ", _SOURCE_TAG.sub(" ", f.read(length).decode("utf-8", "replace"))).strip()
            pos = off + length
            if len(text.split()) >= 3:
                yield f"{head}@{off}", text


def write(out: Path) -> dict:
    """Write the corpus as partitions part-0 .. part-3; returns counts."""
    out = Path(out)
    files = {}
    for p in range(PARTS):
        for j in range(FILES_PER_PART):
            path = out / f"part-{p}" / f"gcide-{j}.jsonl"
            path.parent.mkdir(parents=True, exist_ok=True)
            files[p, j] = open(path, "w", encoding="utf-8")
    n = words = 0
    try:
        for n, (id_, text) in enumerate(entries(), 1):
            p = (n - 1) % PARTS
            files[p, (n - 1) // PARTS % FILES_PER_PART].write(json.dumps({"id": id_, "text": text}) + "\n")
            words += len(text.split())
    finally:
        for f in files.values():
            f.close()
    return {"statements": n, "words": words, "parts": PARTS, "files": len(files)}


if __name__ == "__main__":
    print(write(Path(sys.argv[1])))
