"""What surrounds every publishing run so people can operate it, whichever way it was started
(`shardvec serve`, a work-pool worker, the CLI in local mode).

- Runs of this data directory whose process is gone are marked Crashed before this one starts
  (`tasks/storage/runs.py`); the heartbeat automation of deploy/automations.yaml does it within minutes
  when a server watches, this covers the local mode, whose temporary server died with the run.
  Either way each such run gets a `crashed` line in history.jsonl when shardvec finds it.
- A Dask performance report (its HTML, bokeh inlined: it renders offline) is written for the run
  under <data>/reports/, next to the run's report (report.json). When the Prefect server is a
  `shardvec server` of this data directory (shardvec/server.py), the summary artifact and a link
  artifact point at it over http; otherwise the summary says where the file is.
- A run the quality gate refused emits the event `shardvec.quality-gate.refused`, which the
  alert automation turns into a webhook call.
- A run that completes with quarantined input (in the partitions it took in) gets a warning
  artifact and emits `shardvec.input.quarantined`, which another automation turns into a call.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path

from shardvec.config import Settings
from shardvec.flows.executors import run_logger
from shardvec.flows.watchdog import watch_parent
from shardvec.server import checked_reports
from shardvec.tasks.quality import report as run_report
from shardvec.tasks.storage import runs
from shardvec.tasks.storage.layout import Layout

GATE_EVENT = "shardvec.quality-gate.refused"
QUARANTINE_EVENT = "shardvec.input.quarantined"


def mark_dead_runs_crashed(data: Path) -> list[str]:
    """Tell the Prefect API that the registered runs whose process is gone Crashed; returns their ids.
    Each of them, and each the heartbeat automation had marked Crashed already, gets a `crashed`
    line in the data directory's history (its registration is then removed: one line a run)."""
    from prefect.client.orchestration import get_client
    from prefect.states import Crashed

    from shardvec.tasks.quality.evaluation import append_history

    marked = []
    dead = runs.dead_runs(data)
    if not dead:
        return marked
    with get_client(sync_client=True) as client:
        for r in dead:
            try:
                flow_run = client.read_flow_run(r.flow_run_id)
                state = flow_run.state
                if state is not None and not state.is_final():
                    state = Crashed(
                        message=f"shardvec: the run's process (pid {r.pid}, running since {r.since}) "
                        "is gone; it was killed or its machine stopped."
                    )
                    client.set_flow_run_state(r.flow_run_id, state, force=True)
                    marked.append(r.flow_run_id)
                if state is not None and state.is_crashed():
                    append_history(
                        data,
                        {
                            "at": state.timestamp.astimezone(timezone.utc).isoformat(timespec="seconds"),
                            "flow": client.read_flow(flow_run.flow_id).name,
                            "status": "crashed",
                            "flow_run_id": r.flow_run_id,
                            "message": state.message,
                        },
                    )
            except Exception as exc:  # a run of another server, or deleted: nothing to mark there
                run_logger().debug("could not mark run %s crashed: %s", r.flow_run_id, exc)
            r.path.unlink(missing_ok=True)
    return marked


# What stands where the Dask performance report will be until the run ends and writes it
PENDING = (
    "<!doctype html><meta charset=utf-8><title>Dask performance report</title><p>The Dask performance "
    "report of run {name} replaces this page when the run ends. If the run has ended, it died before "
    "writing it: see the run's logs.</p>\n"
)


class OperatedRun:
    def __init__(self, s: Settings, flow: str, run_id: str | None, ctx=None):
        stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
        self.dir = checked_reports(s.data) / (f"{stamp}-{flow}" + (f"-{run_id[:8]}" if run_id else ""))
        self.dask_report = self.dir / "dask-performance.html"
        self.data, self.flow, self.ctx = s.data, flow, ctx

    def dask_report_url(self) -> str | None:
        """Put a placeholder where the Dask performance report will be; the http URL at which the
        Prefect server serves it, or None if it does not."""
        from shardvec.server import served_url

        self.dask_report.write_text(PENDING.format(name=self.dir.name))
        return served_url(self.dask_report, Layout(self.data).reports)

    def keep(self, report: dict) -> dict:
        """Save the run's report beside its Dask performance report, and warn of the input it
        quarantined; returns the report unchanged."""
        self.dir.mkdir(parents=True, exist_ok=True)
        (self.dir / "report.json").write_text(json.dumps(report, indent=1, default=str))
        if report.get("quarantined_input"):
            self._warn_of_quarantine(report["quarantined_input"])
        return report

    def _warn_of_quarantine(self, files: list[dict]) -> None:
        """The run completes; the records it could not use are named in its log, in a warning
        artifact, and in the event `shardvec.input.quarantined` (an automation's webhook call)."""
        from shardvec.flows.artifacts import publish_quarantine_warning

        folder = Layout(self.data).quarantine
        message = run_report.quarantine_message(files, folder)
        run_logger().warning(message)
        try:
            publish_quarantine_warning(self.flow, files, folder)
        except Exception as exc:  # artifacts are a view; a run never fails for them
            run_logger().warning(f"could not create the quarantine artifact: {exc!r}")
        if self.ctx and self.ctx.flow_run:
            _emit_run_event(
                self.ctx,
                QUARANTINE_EVENT,
                self.flow,
                {
                    "message": message,
                    "records": sum(f["records"] for f in files),
                    "files": [f["source"] for f in files],
                    "quarantine_dir": str(folder),
                    "data_dir": str(self.data),
                },
            )


@contextmanager
def operated(s: Settings, flow: str) -> Iterator[OperatedRun]:
    from prefect.context import FlowRunContext
    from shardvec.errors import QualityGateError

    watch_parent()  # a run whose worker is killed goes with it
    ctx = FlowRunContext.get()
    run_id = str(ctx.flow_run.id) if ctx and ctx.flow_run else None
    log = run_logger()
    for crashed in mark_dead_runs_crashed(s.data):
        log.warning(f"run {crashed} of {s.data} had died without a word; marked Crashed")
    registered = runs.register(s.data, run_id) if run_id else None
    run = OperatedRun(s, flow, run_id, ctx)
    run.dir.mkdir(parents=True, exist_ok=True)
    try:
        with _performance_report(ctx, run, log) as link:
            token = run_report.EXTRAS.set({"data": s.data, "dask_report": link})
            try:
                yield run
            finally:
                run_report.EXTRAS.reset(token)
    except QualityGateError as exc:
        _emit_gate_event(ctx, flow, str(exc), s.data)
        raise
    finally:
        if registered:
            registered.unlink(missing_ok=True)


@contextmanager
def _performance_report(ctx, run: OperatedRun, log) -> Iterator[str | None]:
    """distributed.performance_report over the run's Dask client (none: a run without Dask), into
    run.dask_report; yields the summary's markdown line about it (None: no report). The report
    is a view: failing to write it is logged and never fails the run."""
    try:
        client = ctx.task_runner.client
    except Exception:  # not a DaskTaskRunner, or outside a run
        client = None
    if client is None:
        yield None
        return
    from distributed import performance_report

    path = run.dask_report
    # "inline": bokeh's scripts and styles in the file; by default they come from a CDN, and offline
    # (or where the CDN is blocked) the page stays blank
    report = performance_report(filename=str(path), mode="inline")
    try:
        with client.as_current():
            report.__enter__()
    except Exception as exc:
        log.warning(f"no Dask performance report for this run: {exc!r}")
        yield None
        return
    try:
        url = run.dask_report_url()
    except OSError as exc:
        log.warning(f"could not link the Dask performance report: {exc!r}")
        url = None
    what = "Dask performance report of this run (task stream, worker profiles, bandwidth)"
    try:
        yield (
            f"{what}: [{url}]({url})"
            if url
            else f"{what}: `{path}`, on the machine that ran it. No server serves the reports of {run.data} here: "
            f"`shardvec server --data {run.data}` does, and the runs it watches link their report here."
        )
    finally:
        try:
            with client.as_current():
                report.__exit__(None, None, None)
            log.info(f"Dask performance report of this run: {url or path}")
            if url:
                from prefect.artifacts import create_link_artifact

                create_link_artifact(
                    url, link_text="Dask performance report", key=f"shardvec-{run.flow}-dask-report", description=what
                )
        except Exception as exc:
            log.warning(f"could not write the Dask performance report {path}: {exc!r}")


def _emit_gate_event(ctx, flow: str, message: str, data: Path) -> None:
    if not (ctx and ctx.flow_run):
        return
    _emit_run_event(ctx, GATE_EVENT, flow, {"message": message, "data_dir": str(data)})


def _emit_run_event(ctx, event: str, flow: str, payload: dict) -> None:
    """An event about this flow run (its resource), related to its flow (by name, for the automations)."""
    from prefect.events import emit_event

    emit_event(
        event=event,
        resource={
            "prefect.resource.id": f"prefect.flow-run.{ctx.flow_run.id}",
            "prefect.resource.name": ctx.flow_run.name,
        },
        related=[
            {
                "prefect.resource.id": f"prefect.flow.{ctx.flow_run.flow_id}",
                "prefect.resource.role": "flow",
                "prefect.resource.name": flow,
            }
        ],
        payload=payload,
    )
