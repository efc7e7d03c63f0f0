"""Install the automations of deploy/automations.yaml on the Prefect server (PREFECT_API_URL):
the one that marks silent runs Crashed, and the alerts that call a webhook when a nightly
fails or crashes and when the quality gate refuses a run. Installing again replaces them."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import yaml

AUTOMATIONS = Path(__file__).resolve().parents[1] / "deploy" / "automations.yaml"
BLOCK = "shardvec-alerts"


class AlertsError(RuntimeError):
    """The automations cannot be installed as asked."""


def load(path: Path = AUTOMATIONS) -> list[dict]:
    if not Path(path).is_file():
        raise AlertsError(f"{path} does not exist; pass --file with the path of shardvec's deploy/automations.yaml.")
    return yaml.safe_load(Path(path).read_text())["automations"]


def _calls_webhook(spec: dict) -> bool:
    return any(a.get("type") == "call-webhook" for a in spec["actions"])


def install(webhook: str | None = None, path: Path = AUTOMATIONS) -> list[str]:
    """Create (or replace, by name) the automations; returns the names installed."""
    from prefect.automations import Automation
    from prefect.blocks.webhook import Webhook
    from prefect.client.orchestration import get_client

    specs = load(path)
    block_id = None
    if webhook:
        if not webhook.startswith(("http://", "https://")):
            raise AlertsError(f"--webhook {webhook} is not an http(s) URL; give the full URL, e.g. https://hooks.example.com/x.")
        block_id = Webhook(url=webhook, method="POST", headers={"Content-Type": "application/json"}).save(
            BLOCK, overwrite=True)
    installed = []
    with get_client(sync_client=True) as client:
        for spec in specs:
            if _calls_webhook(spec) and block_id is None:
                continue
            spec = json.loads(json.dumps(copy.deepcopy(spec)).replace('"{webhook}"', f'"{block_id}"'))
            for old in client.read_automations_by_name(spec["name"]):
                client.delete_automation(old.id)
            Automation.model_validate(spec).create()
            installed.append(spec["name"])
    return installed
