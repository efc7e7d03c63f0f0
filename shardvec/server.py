"""`shardvec server`: Prefect's API and UI, and beside them the runs' reports of one data
directory (DATA/reports/, read-only, at REPORTS_PATH), so that a run's page in the UI links to
its Dask performance report over http: a browser refuses file:// links from an http page.

`served_url` is the run's side: the URL at which the server it reports to serves one of its
report files, or None when that server does not (local mode, a plain `prefect server`, another
data directory).
"""

from __future__ import annotations

import ipaddress
import os
import socket
from pathlib import Path

from shardvec.errors import UsageError

REPORTS_PATH = "/shardvec/reports"


def checked_reports(data: Path) -> Path:
    """DATA/reports, refused in a sentence if it is a link that leads outside the data directory:
    runs would write there and the server serve what is there (a link to /etc served /etc/shadow)."""
    from shardvec.config.settings import SettingsError
    from shardvec.tasks.storage.layout import Layout
    from shardvec.tasks.storage.versions import inside

    reports = Layout(data).reports
    if not inside(data, reports.name):
        raise SettingsError(
            f"{reports} leads outside the data directory (to {reports.resolve()}); make it a "
            "folder of its own inside it, then run again."
        )
    return reports


def create_app(reports: Path):
    """Prefect's server app (API, UI, services) with the files under `reports` at REPORTS_PATH.
    Starlette's StaticFiles answers 404 for any path that resolves outside `reports` (`..`,
    symlinks) and serves nothing but files."""
    from prefect.server.api.server import create_app as prefect_app
    from starlette.routing import Mount
    from starlette.staticfiles import StaticFiles

    reports.mkdir(parents=True, exist_ok=True)  # StaticFiles needs it; the first run would make it anyway
    app = prefect_app(final=True)
    # first: Prefect's UI is mounted at / and answers every other path with its own page
    app.router.routes.insert(0, Mount(REPORTS_PATH, app=StaticFiles(directory=reports), name="shardvec-reports"))
    return app


def open_to_others(host: str) -> str | None:
    """A warning when the API would listen beyond this machine with no auth string (None if not)."""
    if _loopback(host) or os.environ.get("PREFECT_SERVER_API_AUTH_STRING"):
        return None
    return (
        f"the Prefect API on {host} is open to anyone who can reach it, and a run "
        "can execute code as this user; set PREFECT_SERVER_API_AUTH_STRING (and PREFECT_API_AUTH_STRING "
        "in every client) first."
    )


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name: what it resolves to may change; warn
        return False


def url(host: str, port: int) -> str:
    """http://host:port, an IPv6 address in brackets."""
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def check_free(host: str, port: int) -> None:
    """Refuse, in one sentence, an address this process cannot listen on."""
    try:
        with socket.create_server((host, port), family=socket.AF_INET6 if ":" in host else socket.AF_INET):
            pass
    except OSError as exc:  # create_server's own message for a taken port is long: the system's is enough
        reason = os.strerror(exc.errno) if exc.errno and exc.errno > 0 else "the host name does not resolve"
        raise UsageError(
            f"Cannot listen on {host}:{port} ({reason}): stop what uses it, or pick another with --port (or --host)."
        ) from None


def run(host: str, port: int, reports: Path) -> None:
    """Serve until stopped, as `prefect server start` does in the foreground."""
    # the UI asks its API at this URL; Prefect's default names port 4200 whatever the port is
    # (set before Prefect is imported: it reads its settings then)
    os.environ.setdefault("PREFECT_UI_API_URL", f"{url(host, port)}/api")  # unless set (a proxy in front)
    os.environ["PREFECT_SERVER_API_HOST"], os.environ["PREFECT_SERVER_API_PORT"] = host, str(port)
    import uvicorn
    from prefect.settings import get_current_settings

    s = get_current_settings().server
    uvicorn.run(
        create_app(reports),
        host=host,
        port=port,
        timeout_keep_alive=s.api.keepalive_timeout,
        ws_ping_interval=s.api.websocket_ping_interval,
        ws_ping_timeout=s.api.websocket_ping_timeout,
        log_level=s.logging_level.lower(),
    )


def served_url(path: Path, reports: Path) -> str | None:
    """The http URL of `path` (a file under `reports`) on the Prefect server this process talks to,
    if that server answers it with this very file; else None."""
    import httpx
    from prefect.settings import get_current_settings

    ui = get_current_settings().ui_url
    if not ui or not ui.startswith(("http://", "https://")):
        return None
    url = f"{ui.rstrip('/')}{REPORTS_PATH}/{path.relative_to(reports).as_posix()}"
    try:  # Prefect's UI answers 200 with its own page for any path, so compare the bytes
        ok = httpx.get(url, timeout=10).content == path.read_bytes()
    except httpx.HTTPError:
        ok = False
    return url if ok else None
