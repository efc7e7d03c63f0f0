"""The settings of one flow run: this process's configuration plus the run's overrides.

A deployment is bound to the data directory (and Dask scheduler, and server) of the process
that serves it: a run's parameters may change tuning knobs, never where data is read from or
written to. Otherwise anyone who can reach the Prefect API could point a run at a folder they
control and have the nightly unpickle "previous models" from it as the service's user.
Direct calls (the CLI, tests, a script) choose their data directory freely.
"""

from __future__ import annotations

from shardvec.config import Settings, load_settings
from shardvec.config.settings import SettingsError

# where things are, not how to compute them: (name, what it is in the settings)
BOUND = [("data_dir", lambda s: s.data), ("dask.address", lambda s: s.dask.address),
         ("server", lambda s: (s.server.host, s.server.port))]


def run_settings(overrides: dict | None, *, deployed: bool | None = None) -> Settings:
    """The run's validated settings; in a deployment run, refused if it moves a bound one."""
    asked = load_settings(**(overrides or {}))
    if deployed is None:
        from prefect.runtime import deployment
        deployed = deployment.id is not None
    if deployed:
        bound = load_settings()
        for name, where in BOUND:
            if where(asked) != where(bound):
                raise SettingsError(f"A deployment run may not change {name}: it is bound to what the serving "
                                    "process was started with; serve another deployment for another data "
                                    "directory, and change only tuning knobs in a run's overrides.")
    return asked
