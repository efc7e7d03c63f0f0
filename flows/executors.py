"""What runs a build's steps: the seam between the pipeline and its orchestrator.

`Build` (flows/pipeline.py) hands every step (a `Step` of flows/skins.py: a plain function with
a name) to an executor and waits on what comes back, as kedro's pipelines hand nodes to a runner:

- `OnPrefect`: each step a Prefect task on the flow run's task runner (Dask in production), so
  the UI shows every step, with its retries; the run's progress and report are artifacts.
- `InProcess`: each step called when it is submitted, in this process, in order (kedro's
  SequentialRunner): no Prefect, no Dask, no retries. The unit tier builds versions with it.

Both hand back futures with `.result()`; `as_completed` yields them as they finish.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Iterable, Iterator
from typing import Any, Protocol


class Future(Protocol):
    def result(self) -> Any: ...


class Executor(Protocol):
    def submit(self, step, *args, wait_for: Iterable[Future] = (), **kwargs) -> Future:
        """Start `step(*args, **kwargs)` once the futures of `wait_for` are done; futures among
        the arguments (at any depth of lists, tuples and dicts) stand for their results."""

    def call(self, step, *args, **kwargs) -> Any:
        """Run `step` now and return its result."""

    def as_completed(self, futures: list) -> Iterator:
        """`futures` as they finish."""

    def progress_artifact(self, flow: str):
        """A callable that shows the run's share of steps done (0-100) in the UI, or None."""

    def publish_report(self, report: dict) -> None:
        """Show the run's report where its users look (the run's page in the Prefect UI)."""

    def logger(self) -> logging.Logger | logging.LoggerAdapter:
        """Where the run's progress lines go (the run's Logs tab in the Prefect UI)."""


class Done:
    """A step that ran: its result, or the exception it raised (raised again by `result`)."""

    def __init__(self, value: Any = None, error: BaseException | None = None):
        self.value, self.error = value, error

    def result(self) -> Any:
        if self.error is not None:
            raise self.error
        return self.value


def _resolved(value: Any) -> Any:
    if isinstance(value, Done):
        return value.result()
    if isinstance(value, (list, tuple)):
        return type(value)(_resolved(v) for v in value)
    if isinstance(value, dict):
        return {k: _resolved(v) for k, v in value.items()}
    return value


class InProcess:
    """Each step runs as it is submitted, in this process; a step whose inputs failed fails too."""

    def submit(self, step, *args, wait_for: Iterable[Future] = (), **kwargs) -> Done:
        try:
            for future in wait_for:
                future.result()
            return Done(step.run(*_resolved(args), **_resolved(kwargs)))
        except Exception as exc:  # kept for .result(), as a Prefect future keeps a failed task's
            return Done(error=exc)

    def call(self, step, *args, **kwargs) -> Any:
        return step.run(*args, **kwargs)

    def as_completed(self, futures: list) -> Iterator:
        return iter(futures)

    def progress_artifact(self, flow: str):
        return None

    def publish_report(self, report: dict) -> None:
        pass

    def logger(self) -> logging.Logger:
        return logging.getLogger("shardvec")


class OnPrefect:
    """Each step a Prefect task, submitted to the task runner of the flow run that calls it."""

    def submit(self, step, *args, wait_for: Iterable[Future] = (), **kwargs):
        return prefect_task(step).submit(*args, wait_for=list(wait_for) or None, **kwargs)

    def call(self, step, *args, **kwargs) -> Any:
        return prefect_task(step)(*args, **kwargs)

    def as_completed(self, futures: list) -> Iterator:
        from prefect.futures import as_completed

        return as_completed(futures)

    def progress_artifact(self, flow: str):
        from prefect.artifacts import create_progress_artifact, update_progress_artifact

        try:
            artifact = create_progress_artifact(
                0.0, key=f"shardvec-{flow}-progress", description=f"shardvec {flow}: share of steps done"
            )
        except Exception:  # outside a flow run (a plain call): bars only
            return None
        return functools.partial(update_progress_artifact, artifact)

    def publish_report(self, report: dict) -> None:
        from shardvec.flows.artifacts import publish_artifacts

        try:
            publish_artifacts(report)
        except Exception as exc:  # artifacts are a view; a run never fails for them
            print(f"(could not create Prefect artifacts: {exc})")

    def logger(self):
        return run_logger()


@functools.cache
def prefect_task(step):
    """`step` as a Prefect task (one per step, made on first use)."""
    from prefect import task
    from prefect.cache_policies import NO_CACHE

    return task(
        step.run,
        name=step.name,
        retries=step.retries,
        retry_delay_seconds=[2, 10, 30],
        cache_policy=NO_CACHE,
        persist_result=False,
    )


def run_logger():
    """The run's logger (its lines go to the run's Logs tab); shardvec's own outside a run."""
    try:
        from prefect.logging import get_run_logger

        return get_run_logger()
    except Exception:  # outside a flow run
        return logging.getLogger("shardvec")
