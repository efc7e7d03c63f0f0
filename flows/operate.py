"""What surrounds every publishing run so people can operate it, whichever way it was started
(`shardvec serve`, a work-pool worker, the CLI in local mode).

- Runs of this data directory whose process is gone are marked Crashed before this one starts
  (`tasks.runs`); the heartbeat automation of deploy/automations.yaml does it within minutes
  when a server watches, this covers the local mode, whose temporary server died with the run.
- A Dask performance report (its HTML) is written for the run under <data>/reports/, next to
  the run's report (report.json), and linked from the summary artifact.
- A run the quality gate refused emits the event `shardvec.quality-gate.refused`, which the
  alert automation turns into a webhook call.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path

from shardvec.config import Settings
from shardvec.tasks import report as run_report
from shardvec.tasks import runs
from shardvec.tasks.layout import Layout

GATE_EVENT = "shardvec.quality-gate.refused"


def _logger():
    from prefect.logging import get_run_logger
    try:
        return get_run_logger()
    except Exception:  # outside a run
        return logging.getLogger("shardvec")


def mark_dead_runs_crashed(data: Path) -> list[str]:
    """Tell the Prefect API that the registered runs whose process is gone Crashed; returns their ids."""
    from prefect.client.orchestration import get_client
    from prefect.states import Crashed

    marked = []
    dead = runs.dead_runs(data)
    if not dead:
        return marked
    with get_client(sync_client=True) as client:
        for r in dead:
            try:
                state = client.read_flow_run(r.flow_run_id).state
                if state is not None and not state.is_final():
                    client.set_flow_run_state(r.flow_run_id, Crashed(
                        message=f"shardvec: the run's process (pid {r.pid}, running since {r.since}) is gone; "
                                "it was killed or its machine stopped."), force=True)
                    marked.append(r.flow_run_id)
            except Exception as exc:  # a run of another server, or deleted: nothing to mark there
                _logger().debug("could not mark run %s crashed: %s", r.flow_run_id, exc)
            r.path.unlink(missing_ok=True)
    return marked


class OperatedRun:
    def __init__(self, s: Settings, flow: str, run_id: str | None):
        stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
        self.dir = Layout(s.data).reports / (f"{stamp}-{flow}" + (f"-{run_id[:8]}" if run_id else ""))
        self.dask_report = self.dir / "dask-performance.html"

    def keep(self, report: dict) -> dict:
        """Save the run's report beside its Dask performance report; returns it unchanged."""
        self.dir.mkdir(parents=True, exist_ok=True)
        (self.dir / "report.json").write_text(json.dumps(report, indent=1, default=str))
        return report


@contextmanager
def operated(s: Settings, flow: str) -> Iterator[OperatedRun]:
    from prefect.context import FlowRunContext
    from shardvec.flows.pipeline import QualityGateError

    ctx = FlowRunContext.get()
    run_id = str(ctx.flow_run.id) if ctx and ctx.flow_run else None
    log = _logger()
    for crashed in mark_dead_runs_crashed(s.data):
        log.warning(f"run {crashed} of {s.data} had died without a word; marked Crashed")
    registered = runs.register(s.data, run_id) if run_id else None
    run = OperatedRun(s, flow, run_id)
    run.dir.mkdir(parents=True, exist_ok=True)
    token = run_report.EXTRAS.set({"data": s.data, "dask_report": run.dask_report})
    try:
        with _performance_report(ctx, run.dask_report, log):
            yield run
    except QualityGateError as exc:
        _emit_gate_event(ctx, flow, str(exc), s.data)
        raise
    finally:
        run_report.EXTRAS.reset(token)
        if registered:
            registered.unlink(missing_ok=True)


@contextmanager
def _performance_report(ctx, path: Path, log) -> Iterator[None]:
    """distributed.performance_report over the run's Dask client (none: a run without Dask).
    The report is a view: failing to write it is logged and never fails the run."""
    try:
        client = ctx.task_runner.client
    except Exception:  # not a DaskTaskRunner, or outside a run
        client = None
    if client is None:
        yield
        return
    from distributed import performance_report
    report = performance_report(filename=str(path))
    try:
        with client.as_current():
            report.__enter__()
    except Exception as exc:
        log.warning(f"no Dask performance report for this run: {exc!r}")
        yield
        return
    try:
        yield
    finally:
        try:
            with client.as_current():
                report.__exit__(None, None, None)
            log.info(f"Dask performance report of this run: {path}")
        except Exception as exc:
            log.warning(f"could not write the Dask performance report {path}: {exc!r}")


def _emit_gate_event(ctx, flow: str, message: str, data: Path) -> None:
    if not (ctx and ctx.flow_run):
        return
    from prefect.events import emit_event
    emit_event(event=GATE_EVENT,
               resource={"prefect.resource.id": f"prefect.flow-run.{ctx.flow_run.id}",
                         "prefect.resource.name": ctx.flow_run.name},
               related=[{"prefect.resource.id": f"prefect.flow.{ctx.flow_run.flow_id}",
                         "prefect.resource.role": "flow", "prefect.resource.name": flow}],
               payload={"message": message, "data_dir": str(data)})
