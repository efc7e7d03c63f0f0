"""How far a run is: progress bars in the terminal and a progress artifact in the Prefect UI."""

from __future__ import annotations

from prefect.futures import as_completed
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn


class RunProgress:
    """One bar per step (its tasks done of all), and the run's overall percentage in the UI."""

    def __init__(self, flow: str, steps: int):
        self.steps, self.done = steps, 0
        self.bars = Progress(TextColumn("{task.description:<22}"), BarColumn(), MofNCompleteColumn(),
                             TimeElapsedColumn())
        self.bars.start()
        self.artifact = None
        try:
            from prefect.artifacts import create_progress_artifact
            self.artifact = create_progress_artifact(0.0, key=f"shardvec-{flow}-progress",
                                                     description=f"shardvec {flow}: share of steps done")
        except Exception:  # outside a flow run (a plain call): bars only
            pass

    def wait(self, step: str, futures) -> list[dict]:
        """Results of the step's futures in submission order, advancing the bars as they land."""
        futures = list(futures)
        bar = self.bars.add_task(step, total=len(futures))
        for i, _ in enumerate(as_completed(futures), 1):
            self.bars.advance(bar)
            self._report(i / max(len(futures), 1))
        self.done += 1
        self._report(0.0)
        return [f.result() for f in futures]

    def one(self, step: str, future) -> dict:
        return self.wait(step, [future])[0]

    def _report(self, within: float) -> None:
        if self.artifact is None:
            return
        from prefect.artifacts import update_progress_artifact
        try:
            update_progress_artifact(self.artifact, min(100.0, 100.0 * (self.done + within) / self.steps))
        except Exception:
            pass

    def close(self) -> None:
        self.bars.stop()
