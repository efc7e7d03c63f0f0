"""The automations of deploy/automations.yaml as Prefect's server reads them, without a server
process: which of them a run's events trigger (one webhook call a failure), and what their
webhook payloads render to with Prefect's own templates (a plain run id, the run's UI link).
The calls themselves, on a real server, are in test_e2e_pool.py."""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import datetime, timezone

import pytest

from shardvec.alerts import load, resolved
from shardvec.flows.operate import GATE_EVENT, QUARANTINE_EVENT
from shardvec.flows.pipeline import GATE_REFUSED

RUN, FLOW = uuid.uuid4(), uuid.uuid4()
UI = "http://127.0.0.1:4200"
# what Prefect's flow engine makes of the QualityGateError flows/pipeline.py raises
REFUSED = (
    f"Flow run encountered an exception: QualityGateError: {GATE_REFUSED}statements_index_recall_at_10 fell "
    "from 0.98 to 0.41, more than quality.index_recall_drop=0.05. Investigate the input, or rerun with "
    "--force to publish anyway."
)


def _event(name: str, flow: str = "nightly", message: str = "", payload: dict | None = None):
    from prefect.server.events.schemas.events import ReceivedEvent

    state = name.rpartition(".")[2] if name.startswith("prefect.flow-run.") else None
    resource = {"prefect.resource.id": f"prefect.flow-run.{RUN}", "prefect.resource.name": "clever-fox"}
    if state:  # the labels of Prefect's own state-change events (prefect/server/models/events.py)
        resource |= {
            "prefect.state-message": message,
            "prefect.state-name": state,
            "prefect.state-type": state.upper(),
            "prefect.run-count": "1",
        }
    return ReceivedEvent(
        id=uuid.uuid4(),
        occurred=datetime.now(timezone.utc),
        event=name,
        resource=resource,
        payload=payload or {},
        related=[
            {
                "prefect.resource.id": f"prefect.flow.{FLOW}",
                "prefect.resource.role": "flow",
                "prefect.resource.name": flow,
            }
        ],
    )


def _alerts_for(*events) -> list[str]:
    """The webhook automations that the events trigger (one name per triggering event)."""
    from prefect.server.events.schemas.automations import EventTrigger

    specs = [s for s in load() if any(a["type"] == "call-webhook" for a in s["actions"])]
    return [s["name"] for e in events for s in specs if EventTrigger.model_validate(s["trigger"]).covers(e)]


def test_the_failure_alert_leaves_out_exactly_the_gates_refusals():
    """The failure automation matches the gate's message by its start, so the two must agree."""
    excluded = [
        spec["trigger"]["match"]["prefect.state-message"]
        for spec in load()
        if "prefect.state-message" in spec["trigger"].get("match", {})
    ]
    assert excluded == [f"!*{GATE_REFUSED}*"]


@pytest.mark.parametrize(
    "what, events, alerts",
    [
        (
            "a nightly the gate refused",
            [
                _event(GATE_EVENT, payload={"message": "Not published: ..."}),
                _event("prefect.flow-run.Failed", message=REFUSED),
            ],
            ["shardvec: run refused by the quality gate"],
        ),
        (
            "a backfill the gate refused",
            [_event(GATE_EVENT, "backfill"), _event("prefect.flow-run.Failed", "backfill", REFUSED)],
            ["shardvec: run refused by the quality gate"],
        ),
        (
            "a failed nightly",
            [
                _event(
                    "prefect.flow-run.Failed",
                    message="Flow run encountered an exception: OSError: [Errno 28] No space left on device",
                )
            ],
            ["shardvec: run failed or crashed"],
        ),
        (
            "a crashed nightly",
            [_event("prefect.flow-run.Crashed", message="No heartbeat for 90 s: ...")],
            ["shardvec: run failed or crashed"],
        ),
        (
            "a failed backfill",
            [_event("prefect.flow-run.Failed", "backfill", "Flow run encountered an exception: ...")],
            ["shardvec: run failed or crashed"],
        ),
        (
            "a crashed add-statements run",
            [_event("prefect.flow-run.Crashed", "add-statements", "Worker stopped")],
            ["shardvec: run failed or crashed"],
        ),
        ("a failed run of a flow not shardvec's", [_event("prefect.flow-run.Failed", "etl", "boom")], []),
        (
            "a nightly that quarantined input",
            [_event(QUARANTINE_EVENT), _event("prefect.flow-run.Completed")],
            ["shardvec: input quarantined"],
        ),
        ("a completed nightly", [_event("prefect.flow-run.Completed")], []),
    ],
)
def test_a_run_triggers_one_webhook_call(what, events, alerts):
    assert _alerts_for(*events) == alerts, what


def _render(template: str, ui_url_setting: str | None) -> dict:
    from prefect.server.events.jinja_filters import all_filters
    from prefect.server.schemas.core import Flow
    from prefect.server.schemas.responses import FlowRunResponse
    from prefect.server.schemas.states import State, StateType
    from prefect.server.utilities.user_templates import register_user_template_filters, render_user_template
    from prefect.settings import PREFECT_API_URL, PREFECT_UI_URL, temporary_settings

    register_user_template_filters(all_filters)  # what the server's webhook action does first
    run = FlowRunResponse(
        id=RUN,
        name="clever-fox",
        flow_id=FLOW,
        state=State(type=StateType.FAILED, name="Failed", message='a "quoted"\nmessage'),
    )
    event = _event(
        QUARANTINE_EVENT,
        payload={
            "message": "1 input record quarantined",
            "records": 1,
            "files": ["2026-11-02/lee.jsonl"],
            "quarantine_dir": "/d/quarantine",
        },
    )
    # no API URL either: a UI URL derived from this test process's own server is not the point
    with temporary_settings({PREFECT_UI_URL: ui_url_setting, PREFECT_API_URL: None}):
        return json.loads(
            asyncio.run(
                render_user_template(
                    template, {"flow_run": run, "event": event, "flow": Flow(id=FLOW, name="backfill")}
                )
            )
        )


@pytest.mark.parametrize("server_ui", [None, "https://prefect.example.com"])
def test_every_payload_is_json_with_a_plain_run_id_and_its_ui_link(server_ui):
    """The server's own UI URL (PREFECT_UI_URL where it runs) when it has one, else the one
    `shardvec alerts install` filled in."""
    payloads = [
        resolved(s, "block-id", UI)["actions"][0]["payload"]
        for s in load()
        if s["actions"][0]["type"] == "call-webhook"
    ]
    assert len(payloads) == 3
    for payload in payloads:
        body = _render(payload, server_ui)
        assert body["flow_run_id"] == str(RUN) and body["flow_run"] == "clever-fox"
        assert body["ui_url"] == f"{server_ui or UI}/runs/flow-run/{RUN}"
        assert body["alert"].startswith("shardvec") and body["message"] and body["state"]
    failed = next(s for s in load() if s["name"] == "shardvec: run failed or crashed")
    assert (
        _render(resolved(failed, "block-id", UI)["actions"][0]["payload"], None)["alert"] == "shardvec backfill Failed"
    )
