"""One data directory: where its things live (`layout`), its locks, and its documents (CURRENT,
the versions' manifests), read and replaced through one object instead of a path handed to
each function."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from shardvec.tasks.storage.atomic import write_json
from shardvec.tasks.storage.documents import Current, Manifest, NotPublishedError
from shardvec.tasks.storage.layout import Layout
from shardvec.tasks.storage.locks import PublishLock, RunLock


@dataclass(frozen=True)
class DataDir:
    root: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root))

    @cached_property
    def layout(self) -> Layout:
        return Layout(self.root)

    def current(self) -> Current | None:
        """The live CURRENT, validated; None before the first publish."""
        try:
            return Current.load(self.layout.current)
        except FileNotFoundError:
            return None

    def require_current(self) -> Current:
        current = self.current()
        if current is None:
            raise NotPublishedError(
                f"Nothing is published in {self.root} yet; run `shardvec nightly --data {self.root}` first."
            )
        return current

    def swap(self, current: Current) -> None:
        """The publish point: atomically replace CURRENT (readers see the old or the new, whole)."""
        write_json(self.layout.current, current.to_json())

    def manifest(self, version: str) -> Manifest:
        """The manifest `versions.prepare` wrote for `version`; FileNotFoundError if it has none."""
        return Manifest.load(self.layout.version(version).manifest)

    def publish_lock(self) -> PublishLock:
        """Held while CURRENT changes: short, blocking."""
        return PublishLock(self.root)

    def run_lock(self, wait_seconds: float = 0.0, say=None, say_every: float = 60.0) -> RunLock:
        """One run at a time: see `RunLock`."""
        return RunLock(self.root, wait_seconds, say=say, say_every=say_every)
