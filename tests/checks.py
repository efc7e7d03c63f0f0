"""What several test modules check: a data directory after statements were added, the pages a
process holds of a file."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from shardvec.tasks.storage.datadir import DataDir
from shardvec.tasks.changes.segments import Statements
from shardvec.tasks.search.topk import exact_topk

# corpus.on_duplicate and corpus.max_record_bytes of config/default.toml, for an Adder made in a test
ADDS = {"on_duplicate": "reject", "max_record_bytes": 1_000_000}


def assert_rows_exact(data: Path) -> int:
    """Every live statement's stored row, the reserve beyond k included, equals a fresh exact
    top-k over all live statements, and holds at least k (or every other live statement).
    Returns the number of live statements."""
    view = Statements(data, DataDir(data).current())
    live = np.array([r for r in range(len(view)) if not view.is_dead(r)])
    exact_r, exact_s = exact_topk(view, view.vectors_at(live), view.width, exclude=live)
    for i, r in enumerate(live):
        got_r, got_s = view.full_row(int(r))
        held = int((got_r >= 0).sum())
        assert held >= min(view.k, len(live) - 1), (r, held)
        assert np.allclose(got_s[:held], exact_s[i][:held], atol=1e-5), r
        differ = got_r[:held] != exact_r[i][:held]
        # ids may only differ where two candidates tie to the last float bit
        assert not differ.any() or np.allclose(got_s[:held][differ], exact_s[i][:held][differ], atol=1e-6), r
    return len(live)


def usable(id_, text) -> bool:
    """The fuzzing oracle's rule for a record the store takes: a non-blank string id and text,
    UTF-8 encodable (no lone surrogate, which JSON's \\ud800 can make) and without NUL."""
    if not (isinstance(id_, str) and isinstance(text, str) and id_.strip() and text.strip()):
        return False
    try:
        (id_ + text).encode("utf-8")
    except UnicodeEncodeError:
        return False
    return "\x00" not in id_ + text


def resident_kb(path) -> int:
    """Resident kB of this process's mappings of `path` (/proc/self/smaps)."""
    total, mine = 0, False
    for line in open("/proc/self/smaps"):
        if "-" in line.split(" ", 1)[0]:
            mine = line.rstrip().endswith(str(path))
        elif mine and line.startswith("Rss:"):
            total += int(line.split()[1])
    return total


# CURRENT and a version's manifest as JSON, for tests that look at the documents themselves
# (shipped code reads the typed ones: DataDir(data).current(), .manifest(version)).
def read_current(data: Path) -> dict | None:
    """CURRENT as JSON, validated (None before the first publish)."""
    current = DataDir(data).current()
    return current.to_json() if current else None


def require_current(data: Path) -> dict:
    """`read_current`, or NotPublishedError saying to run a nightly first."""
    return DataDir(data).require_current().to_json()


def read_manifest(data: Path, version: str) -> dict:
    """The manifest the publish wrote for `version`, as JSON."""
    return DataDir(data).manifest(version).to_json()
