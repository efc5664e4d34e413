"""Build the station from the settings and serve it with uvicorn until SIGINT/SIGTERM."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from adkd.errors import ConfigError, ServiceError
from adkd.platform.station.access import TokenGate, check_bind
from adkd.platform.station.images import open_store
from adkd.platform.station.inspector import Station
from adkd.platform.station.log import VerdictLog, default_url
from adkd.platform.station.served import DEFAULT_ALIAS, ModelSpec, discover, parse_spec, resolve_specs
from adkd.platform.tracking.client import client_for

log = logging.getLogger(__name__)


@dataclass
class WatchSpec:
    category: str | None
    folder: Path


def parse_watch(text: str) -> WatchSpec:
    """``[CATEGORY=]FOLDER``."""
    category, sep, folder = text.partition("=")
    if not sep:
        category, folder = "", text
    path = Path(folder).expanduser()
    if not path.is_dir():
        raise ConfigError(f"--watch {text}: folder {path} does not exist; create it or pass the camera's folder")
    return WatchSpec(category or None, path)


@dataclass
class StationPlan:
    """What ``adkd station`` will serve, resolved before anything listens."""

    station: Station
    host: str
    port: int
    token: str | None
    watches: list[WatchSpec] = field(default_factory=list)


def build_station(settings: Any, models: list[str], alias: str = DEFAULT_ALIAS) -> Station:
    """Open the log and the store and load every model (``models`` empty: all with ``alias``)."""
    specs: list[ModelSpec] = [parse_spec(m, alias) for m in models]
    tracking_uri = settings.resolved_tracking_uri
    try:
        client = client_for(tracking_uri)  # one registry client for the start and the alias refresher
    except ServiceError as exc:
        if not specs:
            raise
        # Named models still start from the cache (resolve_onnx remembers the aliases' last answers).
        log.warning("%s; serving the named models as cached, under their default names", exc)
        client = None
    if specs:
        specs = resolve_specs(client, specs) if client is not None else specs
    else:
        specs = discover(client, alias)
        if not specs:
            raise ConfigError(
                f"no registered adkd model has a version under the alias '{alias}' in {tracking_uri}; promote one "
                "(`adkd registry promote CATEGORY --version N --to production`) or name models: adkd station disc/1"
            )
    categories = [s.category for s in specs]
    if len(set(categories)) != len(categories):
        raise ConfigError(f"a category is named twice in {', '.join(map(str, specs))}; serve one version per category")
    cfg = settings.station
    verdict_log = VerdictLog(cfg.db_url or default_url(settings.runs_dir))
    store = open_store(cfg.store, settings.runs_dir, settings.s3_endpoint_url)
    station = Station(
        specs,
        verdict_log,
        store,
        tracking_uri=tracking_uri,
        registry=client,
        cache_dir=settings.cache_dir,
        runtime=settings.runtime,
        keep_passed=cfg.keep_passed,
        max_upload_bytes=int(cfg.max_upload_mb * 1e6),
    )
    station.load()
    return station


def serve(
    plan: StationPlan,
    settings: Any,
    on_ready: Callable[[str], None] | None = None,
    on_event: Callable[[str], None] | None = None,
) -> None:
    """Run uvicorn in this thread until a stop signal; watchers and the alias refresher run beside it."""
    import uvicorn

    from adkd.platform.station.watch import FolderWatcher
    from adkd.platform.station.web import BodyLimit, create_app

    station = plan.station
    app: Any = create_app(station, settings)
    if plan.token:
        app = TokenGate(app, plan.token)
    limit = int(settings.station.max_upload_mb * 1e6 * settings.station.max_files) + 1_000_000
    app = BodyLimit(app, limit)
    watchers = []
    for spec in plan.watches:
        category = spec.category or _only_category(station)
        station.model_for(category)  # a DataError naming the served categories when it is not served

        def report(result: Any, path: Path, error: str | None) -> None:
            if on_event is None:
                return
            if error:
                on_event(f"watch: {error}")
            else:
                on_event(
                    f"watch: {path.name} {result.verdict} (normalised {result.normalized_score:.3f}, "
                    f"verdict {result.verdict_id})"
                )

        watchers.append(FolderWatcher(station, category, spec.folder, on_result=report))
    stop = threading.Event()

    def refresher() -> None:
        interval = settings.station.refresh_s
        while interval > 0 and not stop.wait(interval):
            try:
                changed = station.refresh()
            except Exception as exc:  # the page keeps serving the loaded versions; say why the check failed
                changed = [f"checking the registry for new versions failed: {exc.__class__.__name__}: {exc}"]
            for line in changed:
                if on_event:
                    on_event(line)

    config = uvicorn.Config(
        app,
        host=plan.host,
        port=plan.port,
        log_level="warning",
        access_log=False,
        server_header=False,
        timeout_graceful_shutdown=10,
    )
    server = uvicorn.Server(config)
    refresh_thread = threading.Thread(target=refresher, name="station-refresh", daemon=True)
    refresh_thread.start()
    for watcher in watchers:
        watcher.start()
    if on_ready:
        host = f"[{plan.host}]" if ":" in plan.host else plan.host
        on_ready(f"http://{host}:{plan.port}")
    try:
        server.run()
    finally:
        stop.set()
        for watcher in watchers:
            watcher.stop()
        station.log.close()
    if not server.started:
        raise ConfigError(f"the station could not listen on {plan.host}:{plan.port}; is the port free? try --port")


def _only_category(station: Station) -> str:
    if len(station.models) != 1:
        raise ConfigError(
            f"--watch FOLDER needs a category when the station serves several ({', '.join(sorted(station.models))}): "
            "write --watch CATEGORY=FOLDER"
        )
    return next(iter(station.models))


__all__ = ["StationPlan", "WatchSpec", "build_station", "check_bind", "parse_watch", "serve"]
