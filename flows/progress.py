"""How far a run is: progress bars in the terminal, a progress artifact in the Prefect UI, and
log lines in the run's Logs tab: each step's start and size, its progress at least every
`every` seconds while it runs, and on finishing its time and throughput.

The artifact is updated at every step's end and, within a step, at most once every
`artifact_every` seconds: each update is a call to the Prefect server, and a step of
thousands of tasks would otherwise make one per task."""

from __future__ import annotations

import threading
import time

from rich import get_console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from shardvec.flows.executors import Executor


class RunProgress:
    """One bar per step (its tasks done of all), and the run's overall percentage in the UI."""

    def __init__(self, flow: str, steps: int, *, executor: Executor, every: float = 30.0, artifact_every: float = 2.0):
        self.executor = executor
        self.steps, self.done, self.every = steps, 0, every
        self.artifact_every, self.reported_at = artifact_every, -float("inf")
        self.updates = 0  # artifact updates sent
        self.log = executor.logger()
        # off a terminal (a worker's log, a pipe) the bars draw only once, when they stop: no
        # thread redrawing them ten times a second
        self.bars = Progress(
            TextColumn("{task.description:<22}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            auto_refresh=get_console().is_terminal,
        )
        self.bars.start()
        self.artifact = self.executor.progress_artifact(flow)  # None: bars only

    def wait(self, step: str, futures) -> list[dict]:
        """Results of the step's futures in submission order, advancing the bars as they land."""
        futures = list(futures)
        bar = self.bars.add_task(step, total=len(futures))
        started, unit = time.monotonic(), UNITS.get(step, "tasks")
        self.log.info(f"{step}: started, {len(futures)} {unit if len(futures) != 1 else unit.rstrip('s')}")
        finished = [0]
        stop = threading.Event()

        def still_going() -> None:  # a thread: a long task keeps the loop below waiting
            while not stop.wait(self.every):
                self.log.info(
                    f"{step}: {finished[0]} of {len(futures)} {unit} done, {time.monotonic() - started:.0f} s so far"
                )

        ticker = threading.Thread(target=still_going, daemon=True)
        ticker.start()
        try:
            for finished[0], _ in enumerate(self.executor.as_completed(futures), 1):
                self.bars.advance(bar)
                if time.monotonic() - self.reported_at >= self.artifact_every:
                    self._report(finished[0] / max(len(futures), 1))
        finally:
            stop.set()
            ticker.join()
        self.done += 1
        self._report(0.0)
        results = [f.result() for f in futures]
        self.log.info(
            f"{step}: finished in {time.monotonic() - started:.1f} s; "
            + throughput(results, time.monotonic() - started)
        )
        return results

    def one(self, step: str, future) -> dict:
        return self.wait(step, [future])[0]

    def _report(self, within: float) -> None:
        if self.artifact is None:
            return
        self.reported_at = time.monotonic()
        try:
            self.artifact(min(100.0, 100.0 * (self.done + within) / self.steps))
            self.updates += 1
        except Exception:
            pass

    def close(self) -> None:
        self.bars.stop()


# what one task of a step works on, for the log lines
UNITS = {
    "tokenize": "files",
    "project-statements": "shards",
    "index-words": "shards",
    "index-statements": "shards",
    "similarity-rows": "tasks",
    "merge-rows": "tasks",
    "recall": "checks",
    "evaluate": "checks",
}
SIZES = ("records", "tokens", "statements", "rows", "vectors", "words", "terms", "pairs")


def throughput(results: list[dict], seconds: float) -> str:
    """The sizes a step's results report, each with its rate: "records 353 (1,204/s), ..."."""
    parts = []
    for key in SIZES:
        values = [
            r[key]
            for r in results
            if isinstance(r, dict) and isinstance(r.get(key), (int, float)) and not isinstance(r.get(key), bool)
        ]
        if values:
            total = sum(values)
            parts.append(f"{key} {total:,} ({total / max(seconds, 1e-3):,.0f}/s)")
    return ", ".join(parts) or f"{len(results)} tasks"
