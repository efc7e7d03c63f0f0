"""The data directory's two central documents, typed: CURRENT (which version is live, its
additions and the ledger position) and a version's manifest. Each is read and validated in one
place (`load`) and written in one (`to_json`), in the JSON docs/data-format.md describes: what
older code wrote loads, and what this code writes is what it wrote, key for key.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from shardvec.errors import ShardvecError
from shardvec.tasks.storage.layout import COMPONENTS, Layout

FORMAT = 1
VERSION_ID = re.compile(r"^\d{8}T\d{6}-[0-9a-f]{6}$")
_RECOVER = (
    "move it aside and run `shardvec backfill --mode rebuild` (the ledger keeps every "
    "acknowledged add, replace and delete), or restore CURRENT from a backup"
)


class NotPublishedError(FileNotFoundError, ShardvecError):
    pass


class DamagedCurrentError(ValueError, ShardvecError):
    """CURRENT cannot be trusted: nothing is read or written through it."""


class NotADataDirectoryError(ShardvecError):
    """--data names a file."""


class DamagedManifestError(ValueError, ShardvecError):
    """A version's manifest cannot be read: the version cannot be served or rolled back to."""


def inside(data: Path, rel: object, under: str = "") -> bool:
    """True if `rel` is a relative path that stays inside data/under, symlinks resolved."""
    if not isinstance(rel, str) or not rel or os.path.isabs(rel):
        return False
    root = Path(data).resolve() / under  # a symlinked `under` that leads outside fails too
    return (Path(data) / rel).resolve().is_relative_to(root)


@dataclass(frozen=True)
class Additions:
    """CURRENT's `additions`: the segments of adds and deletes made on top of `base`, oldest first."""

    base: str
    segments: tuple[str, ...] = ()
    next_seq: int = 1  # the next free segment number
    statements: int | None = None  # live statements in all, once a segment was written

    def to_json(self) -> dict:
        out = {"next_seq": self.next_seq, "base": self.base, "segments": list(self.segments)}
        return out if self.statements is None else {**out, "statements": self.statements}


@dataclass(frozen=True)
class Current:
    """What CURRENT names: the live version, its components (paths relative to the data
    directory), the watermark, the last acknowledged ledger batch, and the additions on top."""

    version: str
    components: dict[str, str]
    watermark: dict
    published_at: str | None = None
    ledger: int = 0
    additions: Additions | None = None
    rolled_back_from: str | None = None
    format: int = FORMAT

    @property
    def partitions(self) -> list[str]:
        return self.watermark.get("partitions", [])

    @property
    def segments(self) -> tuple[str, ...]:
        return self.additions.segments if self.additions else ()

    def to_json(self) -> dict:
        out = {
            "format": self.format,
            "version": self.version,
            "components": dict(self.components),
            "watermark": self.watermark,
            "published_at": self.published_at,
        }
        if self.rolled_back_from is not None:
            out["rolled_back_from"] = self.rolled_back_from
        out["ledger"] = self.ledger
        if self.additions is not None:
            out["additions"] = self.additions.to_json()
        return out

    @classmethod
    def load(cls, path: Path) -> Current:
        """The CURRENT file at `path` (the data directory's), validated: its version id has the form
        this shardvec writes, and every path it names stays inside the data directory (symlinks
        resolved). FileNotFoundError if there is none."""
        try:
            doc = json.loads(Path(path).read_text())
        except NotADirectoryError:
            raise NotADataDirectoryError(
                f"{Path(path).parent} is a file, not a data directory; give the folder "
                "the nightly publishes into (--data or data_dir)."
            ) from None
        except (ValueError, UnicodeDecodeError) as exc:
            raise DamagedCurrentError(f"{path} is not valid JSON ({exc}); {_RECOVER}.") from None
        return cls.from_json(doc, Path(path).parent, path)

    @classmethod
    def from_json(cls, doc: object, data: Path, path: Path | str = "CURRENT") -> Current:
        """`doc`, CURRENT's JSON for the data directory `data`, validated (`path` names it in errors)."""
        if not isinstance(doc, dict) or doc.get("format") != FORMAT:
            got = doc.get("format") if isinstance(doc, dict) else None
            raise DamagedCurrentError(
                f"{path} has format {got!r}, this shardvec reads {FORMAT}; upgrade shardvec, or {_RECOVER}."
            )
        problem = _current_problem(Path(data), doc)
        if problem:
            raise DamagedCurrentError(f"{path} {problem}; {_RECOVER}.")
        adds = doc.get("additions")
        return cls(
            version=doc["version"],
            components=dict(doc["components"]),
            watermark=doc.get("watermark", {}),
            published_at=doc.get("published_at"),
            ledger=doc.get("ledger", 0),
            additions=Additions(
                adds["base"],
                tuple(adds.get("segments", [])),
                adds.get("next_seq", len(adds.get("segments", [])) + 1),
                adds.get("statements"),
            )
            if adds
            else None,
            rolled_back_from=doc.get("rolled_back_from"),
            format=doc["format"],
        )


def _current_problem(data: Path, doc: dict) -> str | None:
    version = doc.get("version")
    if not isinstance(version, str) or not VERSION_ID.match(version):
        return f"names {version!r} as its version, which is not a version id"
    seq = doc.get("ledger", 0)
    if not isinstance(seq, int) or isinstance(seq, bool) or not 0 <= seq < 10**15:
        return f"names {doc.get('ledger')!r} as its ledger position"
    comps = doc.get("components")
    if not isinstance(comps, dict) or set(comps) != set(COMPONENTS):
        return "does not name the components of a version"
    watermark = doc.get("watermark", {})
    if not isinstance(watermark, dict) or not isinstance(watermark.get("partitions", []), list):
        return f"names {watermark!r} as its watermark"
    adds = doc.get("additions") or {}
    if (
        not isinstance(adds, dict)
        or (adds and not isinstance(adds.get("base"), str))
        or not isinstance(adds.get("segments", []), list)
        or not all(
            isinstance(adds.get(k, 0), int) and not isinstance(adds.get(k, 0), bool) for k in ("next_seq", "statements")
        )
    ):
        return f"names {doc.get('additions')!r} as its additions"
    numbers = [
        int(m.group(1))
        for seg in adds.get("segments", [])
        if isinstance(seg, str)
        for m in [re.search(r"/(\d+)$", seg)]
        if m
    ]
    if adds and numbers and adds.get("next_seq", len(numbers) + 1) <= max(numbers):
        return (
            f"names {adds.get('next_seq')!r} as the next segment number, not above its segments' "
            f"({max(numbers)}), so the next add would write over one"
        )
    where = Layout(data)
    for rel, under in [(c, where.versions) for c in comps.values()] + [
        (s, where.additions) for s in adds.get("segments", [])
    ]:
        if not inside(data, rel, under.name):
            return f"names {rel!r}, which is not inside {under}"
    return None


@dataclass(frozen=True)
class Manifest:
    """A version's manifest.json: what CURRENT would name (`components`, `watermark`), the
    checksum of every file (`files`), and the build's summary (created_by, mode, counts,
    quality, config, tokenizer, intake, code_version, steps, ledger), kept in its order."""

    version: str
    components: dict[str, str]
    watermark: dict
    summary: dict = field(default_factory=dict)
    files: dict[str, str] = field(default_factory=dict)
    format: int = FORMAT

    @property
    def ledger(self) -> int:
        """The last ledger batch the build's shards hold."""
        return self.summary.get("ledger", 0)

    @property
    def created_by(self) -> str | None:
        return self.summary.get("created_by")

    @property
    def counts(self) -> dict:
        return self.summary.get("counts", {})

    @property
    def quality(self) -> dict:
        return self.summary.get("quality", {})

    @property
    def tokenizer(self) -> dict:
        """The tokenizer settings the models were trained with; in versions made before the
        manifest kept them, the `tokenize` settings of its config."""
        return self.summary.get("tokenizer") or self.summary.get("config", {}).get("tokenize", {})

    def to_json(self) -> dict:
        return {
            "format": self.format,
            "version": self.version,
            "components": dict(self.components),
            "watermark": self.watermark,
            **self.summary,
            "files": dict(self.files),
        }

    @classmethod
    def load(cls, path: Path) -> Manifest:
        """The manifest at `path`; FileNotFoundError if there is none."""
        try:
            doc = json.loads(Path(path).read_text())
        except (ValueError, UnicodeDecodeError) as exc:
            raise DamagedManifestError(
                f"{path} is not valid JSON ({exc}); roll back to another kept version, "
                "or run `shardvec backfill --mode rebuild`."
            ) from None
        return cls.from_json(doc, path)

    @classmethod
    def from_json(cls, doc: object, path: Path | str = "manifest.json") -> Manifest:
        if (
            not isinstance(doc, dict)
            or not isinstance(doc.get("version"), str)
            or not isinstance(doc.get("components"), dict)
            or not isinstance(doc.get("files", {}), dict)
        ):
            raise DamagedManifestError(
                f"{path} is not a version manifest; roll back to another kept version, "
                "or run `shardvec backfill --mode rebuild`."
            )
        known = {"format", "version", "components", "watermark", "files"}
        return cls(
            version=doc["version"],
            components=dict(doc["components"]),
            watermark=doc.get("watermark", {}),
            summary={k: v for k, v in doc.items() if k not in known},
            files=dict(doc.get("files", {})),
            format=doc.get("format", FORMAT),
        )
