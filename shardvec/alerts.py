"""Install the automations of deploy/automations.yaml on the Prefect server (PREFECT_API_URL):
the one that marks silent runs Crashed, and the alerts that call a webhook (once a run, with a
link to the run's page in the UI) when a nightly, backfill or add-statements run fails or
crashes, when the quality gate
refuses a run, and when a run quarantined input records. Installing again replaces them."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from shardvec.errors import ShardvecError

AUTOMATIONS = Path(__file__).resolve().parents[1] / "deploy" / "automations.yaml"
BLOCK = "shardvec-alerts"
# names shardvec once installed under, deleted by `install` so that no old copy alerts twice
RETIRED = ["shardvec: nightly failed or crashed"]


class AlertsError(RuntimeError, ShardvecError):
    """The automations cannot be installed as asked."""


def load(path: Path = AUTOMATIONS) -> list[dict]:
    if not Path(path).is_file():
        raise AlertsError(f"{path} does not exist; pass --file with the path of shardvec's deploy/automations.yaml.")
    return yaml.safe_load(Path(path).read_text())["automations"]


def _calls_webhook(spec: dict) -> bool:
    return any(a.get("type") == "call-webhook" for a in spec["actions"])


def ui_url() -> str:
    """The UI of the server PREFECT_API_URL names: Prefect's PREFECT_UI_URL setting, which is
    PREFECT_API_URL without its /api unless set."""
    from prefect.settings import get_current_settings

    return (get_current_settings().ui_url or "").rstrip("/")


def resolved(spec: dict, block_id: str | None, ui: str) -> dict:
    """`spec` with its placeholders filled: {webhook} (the block's id) and {ui} (the UI's URL)."""
    text = json.dumps(spec).replace('"{webhook}"', json.dumps(str(block_id))).replace("{ui}", json.dumps(ui)[1:-1])
    return json.loads(text)


def saved_webhook():
    """The id of the Webhook block an earlier install saved, or None."""
    from prefect.blocks.webhook import Webhook

    try:
        return Webhook.load(BLOCK)._block_document_id
    except ValueError:  # none saved
        return None


def install(webhook: str | None = None, path: Path = AUTOMATIONS) -> list[str]:
    """Create (or replace, by name) the automations; returns the names installed. Without a
    webhook, the one saved by an earlier install is used; with none, only the automations that
    call no webhook are installed."""
    from prefect.automations import Automation
    from prefect.blocks.webhook import Webhook
    from prefect.client.orchestration import get_client

    specs = load(path)
    if webhook:
        if not webhook.startswith(("http://", "https://")):
            raise AlertsError(
                f"--webhook {webhook} is not an http(s) URL; give the full URL, e.g. https://hooks.example.com/x."
            )
        block_id = Webhook(url=webhook, method="POST", headers={"Content-Type": "application/json"}).save(
            BLOCK, overwrite=True
        )
    else:  # the webhook saved by an earlier `alerts install --webhook`, if any: `shardvec serve`
        block_id = saved_webhook()  # installs again at every start and must not drop the alerts
    installed, ui = [], ui_url()
    with get_client(sync_client=True) as client:
        if block_id is not None:  # their successors are installed below
            for name in RETIRED:
                for old in client.read_automations_by_name(name):
                    client.delete_automation(old.id)
        for spec in specs:
            if _calls_webhook(spec) and block_id is None:
                continue
            spec = resolved(spec, block_id, ui)
            for old in client.read_automations_by_name(spec["name"]):
                client.delete_automation(old.id)
            Automation.model_validate(spec).create()
            installed.append(spec["name"])
    return installed
