"""`adkd ui`: MLflow's own server over the configured store, with a landing page that opens the training runs.

MLflow 3 keeps the experiment page's GenAI / model-training choice in the browser (localStorage key
``mlflow.workflowType_v1``, GenAI by default: mlflow/mlflow issue 24498), so a fresh browser lands on the GenAI
"Overview" of an experiment that holds only training runs. The landing page ``/adkd/open`` is served by the
same server (the same origin, so it can write that key): it records the model-training choice and redirects
to the experiment's runs (``?experiment=<id>``) or to the registered models (``?page=models``). The app is
MLflow's (``mlflow.server.fastapi_app``) behind a thin ASGI wrapper, started through MLflow's plugin entry
point ``mlflow.app`` (``mlflow ui --app-name adkd-ui``, declared in pyproject.toml).

MLflow's start-up chatter (INFO lines, the security-middleware notice, Starlette's deprecation warnings) is
dropped from the server's output; anything else it prints (errors) still shows.
"""

from __future__ import annotations

import html
import json
import re
from collections.abc import Awaitable, Callable, Iterable
from typing import Any
from urllib.parse import parse_qs

APP_NAME = "adkd-ui"  # the mlflow.app entry point
LANDING_PATH = "/adkd/open"
WORKFLOW_KEY = "mlflow.workflowType_v1"  # MLflow UI's useLocalStorage key: "<key>_v<version>"
TRAINING_WORKFLOW = "machine_learning"
# Set when absent: the UI otherwise opens its AI-assistant panel over the runs on a browser's first visit.
ASSISTANT_SHOWN_KEY = "mlflow.assistant.fab.autoOpenedOnFirstLoad_v1"
NOISE = (
    re.compile(r"\bINFO\b"),
    re.compile(r"Registry store URI not provided"),
    re.compile(r"\[MLflow\] Security middleware enabled"),
    re.compile(r"DeprecationWarning"),
    re.compile(r"^\s+from starlette\."),  # the source line Python prints under a warning
)

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


def runs_target(experiment_id: str) -> str:
    """The UI's route to an experiment's training runs (the query also picks the view for this visit)."""
    return f"#/experiments/{experiment_id}/runs?workflowType={TRAINING_WORKFLOW}"


def landing_link(base_url: str, experiment_id: str | None = None) -> str:
    """The link ``adkd ui`` prints: the landing page for an experiment's runs, or for the registered models."""
    query = f"experiment={experiment_id}" if experiment_id is not None else "page=models"
    return f"{base_url.rstrip('/')}{LANDING_PATH}?{query}"


def landing_page(query: str) -> tuple[int, str]:
    """(status, HTML) of the landing page for ``query`` (``experiment=<id>`` or ``page=models``)."""
    params = parse_qs(query)
    experiment = (params.get("experiment") or [""])[0]
    if experiment:
        if not experiment.isdigit():
            return 400, "<!doctype html><p>experiment must be an experiment id (digits)</p>"
        target = "/" + runs_target(experiment)
    elif (params.get("page") or [""])[0] == "models":
        target = f"/#/models?workflowType={TRAINING_WORKFLOW}"
    else:
        target = "/"
    workflow, assistant = json.dumps(WORKFLOW_KEY), json.dumps(ASSISTANT_SHOWN_KEY)
    script = (
        "try {\n"
        f"  localStorage.setItem({workflow}, {json.dumps(json.dumps(TRAINING_WORKFLOW))});\n"
        f'  if (localStorage.getItem({assistant}) === null) localStorage.setItem({assistant}, "true");\n'
        "} catch (e) {}\n"
        f"location.replace({json.dumps(target)});"
    )
    page = (
        '<!doctype html>\n<html><head><meta charset="utf-8"><title>adkd: opening MLflow</title></head>\n'
        f"<body><script>\n{script}\n</script>\n"
        f'<noscript><a href="{html.escape(target)}">Open MLflow</a></noscript></body></html>\n'
    )
    return 200, page


class LandingApp:
    """MLflow's ASGI app with the landing page in front of it (everything else goes to MLflow unchanged)."""

    def __init__(self, app: Callable[[Scope, Receive, Send], Awaitable[None]]) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope.get("path") == LANDING_PATH:
            status, body = landing_page(scope.get("query_string", b"").decode("latin-1"))
            data = body.encode("utf-8")
            headers = [(b"content-type", b"text/html; charset=utf-8"), (b"content-length", str(len(data)).encode())]
            headers.append((b"cache-control", b"no-store"))
            await send({"type": "http.response.start", "status": status, "headers": headers})
            await send({"type": "http.response.body", "body": data})
            return
        await self.app(scope, receive, send)


def create_app() -> LandingApp:
    """The ``mlflow.app`` factory: MLflow's tracking server app behind the landing page."""
    from mlflow.server.fastapi_app import app

    return LandingApp(app)


def is_noise(line: str) -> bool:
    """A line of MLflow's start-up chatter (dropped from `adkd ui`'s output unless --debug)."""
    return any(pattern.search(line) for pattern in NOISE)


def relay(lines: Iterable[str], write: Callable[[str], Any], debug: bool = False) -> None:
    """Pass the server's output on, without its chatter (everything with ``debug``)."""
    for line in lines:
        if debug or not is_noise(line):
            write(line)


def recent_experiments(client: Any, limit: int = 5) -> tuple[list[Any], int]:
    """The experiments with runs, most recently updated first (at most ``limit``), and how many there are."""
    found = [e for e in client.search_experiments() if e.name != "Default" or _has_runs(client, e)]
    found.sort(key=lambda e: e.last_update_time or 0, reverse=True)
    return found[:limit], len(found)


def _has_runs(client: Any, experiment: Any) -> bool:
    return bool(client.search_runs([experiment.experiment_id], max_results=1))
