"""The station's pages (server-rendered, a few lines of JavaScript for the drop zone) and its JSON API.

Routes: ``GET /`` (models, upload form, recent verdicts), ``POST /inspect`` (multipart upload, results
page), ``POST /feedback``, ``GET /monitor`` (+ ``/monitor/report``: the self-contained HTML),
``GET /images/{id}/{image|overlay}`` (kept files), ``POST /api/inspect`` and ``GET /api/verdicts``
(JSON, for cameras and scripts), ``GET /health``. Bad input never stops the server: each file gets its own
message and the others are still inspected.
"""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.formparsers import MultiPartException

from adkd.errors import AdkdError
from adkd.pipelines.evaluate.metric_names import METRIC_LABELS
from adkd.platform.station.inspector import Inspection, Station
from adkd.platform.tracking.redaction import redact_uri

TEMPLATES = Jinja2Templates(directory=str(Path(__file__).parent / "templates"))


def _metrics_text(metrics: dict[str, float]) -> str:
    """The version's test metrics as the page shows them (percent, adkd's names)."""
    shown = [f"{label} {100 * metrics[key]:.1f}%" for key, label in METRIC_LABELS.items() if key in metrics]
    return " · ".join(shown) or "no test metrics"


TEMPLATES.env.filters["metrics_text"] = _metrics_text
UPLOAD_SOURCE = "upload"
_CONTENT_TYPES = {
    "png": "image/png",
    "jpg": "image/jpeg",
    "bmp": "image/bmp",
    "tif": "image/tiff",
    "webp": "image/webp",
}


class UploadTooLarge(Exception):
    """The request body passed the station's limit."""


class BodyLimit:
    """ASGI middleware: refuse request bodies over ``limit`` bytes (announced or streamed) with 413."""

    def __init__(self, app: Any, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = next((v for k, v in scope.get("headers") or [] if k == b"content-length"), None)
        if length is not None and length.isdigit() and int(length) > self.limit:
            body = (
                f"413: the upload is {int(length) / 1e6:.1f} MB, more than the station accepts in one request "
                f"({self.limit / 1e6:.0f} MB); send fewer or smaller images\n"
            ).encode()
            await send(
                {
                    "type": "http.response.start",
                    "status": 413,
                    "headers": [(b"content-type", b"text/plain; charset=utf-8"), (b"connection", b"close")],
                }
            )
            await send({"type": "http.response.body", "body": body})
            return
        seen = 0

        async def limited() -> dict:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    raise UploadTooLarge(seen)
            return message

        await self.app(scope, limited, send)


def _result_view(r: Inspection) -> dict[str, Any]:
    return {
        "verdict_id": r.verdict_id,
        "name": r.name,
        "verdict": r.verdict,
        "score": r.score,
        "normalized_score": r.normalized_score,
        "threshold": r.threshold,
        "latency_ms": r.latency_ms,
        "model": r.model,
        "overlay_b64": base64.b64encode(r.overlay_png).decode("ascii"),
        "kept": r.kept,
        "width": r.width,
        "height": r.height,
        "notes": r.notes,
    }


def _result_json(r: Inspection) -> dict[str, Any]:
    return {
        "verdict_id": r.verdict_id,
        "image": r.name,
        "category": r.category,
        "verdict": r.verdict,
        "anomalous": r.anomalous,
        "score": r.score,
        "normalized_score": r.normalized_score,
        "threshold": r.threshold,
        "latency_ms": r.latency_ms,
        "model": r.model.name,
        "version": r.model.version,
        "image_sha256": r.sha256,
        "kept": r.kept,
        "notes": r.notes,
    }


def create_app(station: Station, settings: Any) -> FastAPI:
    """The FastAPI app over ``station`` (``settings``: the loaded adkd settings)."""
    app = FastAPI(title="adkd station", docs_url=None, redoc_url=None, openapi_url=None)
    cfg = settings.station
    max_files = int(cfg.max_files)
    log_url = redact_uri(station.log.url)
    if log_url.startswith("sqlite:///"):  # the header names the file; the full path is in the start-up lines
        log_url = "SQLite " + Path(log_url.removeprefix("sqlite:///")).name

    def page(request: Request, name: str, status: int = 200, **context: Any) -> HTMLResponse:
        context.setdefault("page", "inspect")
        base = {"log_url": log_url, "store": station.store.description}
        return TEMPLATES.TemplateResponse(request, name, {**base, **context}, status_code=status)

    def message(request: Request, text: str, status: int) -> HTMLResponse:
        return page(request, "message.html", status=status, message=text)

    @app.exception_handler(UploadTooLarge)
    async def _too_large(request: Request, exc: UploadTooLarge) -> Response:
        limit = cfg.max_upload_mb * max_files
        return message(request, f"the upload is larger than the station accepts in one request ({limit:.0f} MB)", 413)

    def index_context(**extra: Any) -> dict[str, Any]:
        recent = station.log.recent(limit=30)
        types = sorted({r["defect_type"] for r in recent if r.get("defect_type")})
        models = [station.models[c] for c in sorted(station.models)]
        return {
            "models": models,
            "recent": recent,
            "defect_types": types,
            "max_files": max_files,
            "max_mb": cfg.max_upload_mb,
            "category": models[0].category if models else "",
            **extra,
        }

    @app.get("/", response_class=HTMLResponse)
    async def index(request: Request, feedback: int | None = None) -> Response:
        notice = f"feedback stored for verdict {feedback}" if feedback else None
        return page(request, "inspect.html", **await run_in_threadpool(index_context, notice=notice))

    async def read_uploads(request: Request) -> tuple[str, list[tuple[str | None, bytes]], list[str]]:
        try:
            form = await request.form(max_files=max_files, max_fields=16)
        except (MultiPartException, HTTPException) as exc:  # Starlette turns the parser's errors into 400s
            reason = getattr(exc, "detail", None) or str(exc)
            raise AdkdError(f"the upload could not be read: {reason} (at most {max_files} images per upload)") from None
        category = str(form.get("category") or "")
        files, errors = [], []
        limit = int(cfg.max_upload_mb * 1e6)
        for item in form.getlist("files"):
            if not isinstance(item, UploadFile):
                continue
            if not item.filename and not item.size:
                continue  # the browser's empty file input
            files.append((item.filename, await item.read(limit + 1)))
        await form.close()
        if not files:
            errors.append("no image was uploaded: choose or drop one or more image files")
        return category, files, errors

    async def inspect_all(category: str, files: list[tuple[str | None, bytes]]) -> tuple[list, list[str]]:
        results, errors = [], []
        for filename, data in files:
            try:
                results.append(await run_in_threadpool(station.inspect, category, data, filename, UPLOAD_SOURCE))
            except AdkdError as exc:
                errors.append(str(exc))
        return results, errors

    @app.post("/inspect", response_class=HTMLResponse)
    async def inspect_page(request: Request) -> Response:
        try:
            category, files, errors = await read_uploads(request)
        except AdkdError as exc:
            context = await run_in_threadpool(index_context, errors=[str(exc)])
            return page(request, "inspect.html", status=400, **context)
        results, failed = await inspect_all(category, files)
        errors += failed
        status = 200 if results or not errors else 400
        context = await run_in_threadpool(index_context, errors=errors, results=[_result_view(r) for r in results])
        if category in station.models:
            context["category"] = category
        return page(request, "inspect.html", status=status, **context)

    @app.post("/api/inspect")
    async def inspect_api(request: Request) -> Response:
        try:
            category, files, errors = await read_uploads(request)
        except AdkdError as exc:
            return JSONResponse({"results": [], "errors": [str(exc)]}, status_code=400)
        results, failed = await inspect_all(category, files)
        errors += failed
        status = 200 if results or not errors else 400
        return JSONResponse({"results": [_result_json(r) for r in results], "errors": errors}, status_code=status)

    @app.post("/feedback")
    async def feedback(request: Request) -> Response:
        try:
            form = await request.form(max_files=0, max_fields=8)
        except (MultiPartException, HTTPException):
            return message(request, "feedback is a small form: a verdict id, Right or Wrong, a defect type", 400)
        raw_id, correct = str(form.get("verdict_id") or ""), str(form.get("correct") or "")
        if not raw_id.isdigit() or correct not in ("yes", "no"):
            return message(request, "feedback needs a verdict id and Right or Wrong; reload the page", 400)
        defect = form.get("defect_type")
        try:
            await run_in_threadpool(
                station.feedback, int(raw_id), correct == "yes", str(defect) if isinstance(defect, str) else None
            )
        except AdkdError as exc:
            return message(request, str(exc), 400)
        return RedirectResponse(f"/?feedback={int(raw_id)}#row-{int(raw_id)}", status_code=303)

    @app.get("/monitor", response_class=HTMLResponse)
    async def monitor_page(request: Request, category: str | None = None) -> Response:
        from adkd.platform.monitoring.monitor import monitor_category
        from adkd.platform.monitoring.report import fragment

        names = [category] if category else sorted(station.models)
        sections = []
        for name in names:
            try:
                outcome = await run_in_threadpool(monitor_category, station.log, name, settings.monitor)
                sections.append((name, await run_in_threadpool(fragment, outcome), None))
            except AdkdError as exc:
                sections.append((name, "", str(exc)))
        return page(
            request, "monitor.html", page="monitor", sections=sections, window_hours=settings.monitor.window_hours
        )

    @app.get("/monitor/report", response_class=HTMLResponse)
    async def monitor_report(request: Request, category: str) -> Response:
        from adkd.platform.monitoring.monitor import monitor_category
        from adkd.platform.monitoring.report import page_html

        try:
            outcome = await run_in_threadpool(monitor_category, station.log, category, settings.monitor)
        except AdkdError as exc:
            return message(request, str(exc), 404)
        return HTMLResponse(await run_in_threadpool(page_html, outcome))

    # Plain functions: FastAPI runs them in its thread pool, so the database and the store never block the loop.
    @app.get("/images/{verdict_id}/{kind}")
    def image(request: Request, verdict_id: int, kind: str) -> Response:
        row = station.log.verdict(verdict_id) if kind in ("overlay", "image") else None
        key = (row or {}).get("overlay_key" if kind == "overlay" else "image_key")
        try:
            data = station.store.get(key) if key else None
        except (OSError, AdkdError):
            data = None
        if data is None or key is None:
            return message(request, f"verdict {verdict_id} has no kept {kind[:20]}", 404)
        return Response(data, media_type=_CONTENT_TYPES.get(key.rsplit(".", 1)[-1], "application/octet-stream"))

    @app.get("/api/verdicts")
    def verdicts(category: str | None = None, limit: int = 100) -> Response:
        rows = station.log.recent(category, limit=max(1, min(limit, 1000)))
        for row in rows:
            for key in ("created_at", "feedback_at"):
                if row.get(key) is not None:
                    row[key] = row[key].isoformat() + "Z"
        return JSONResponse({"verdicts": rows, "counts": station.log.counts()})

    @app.get("/health")
    async def health() -> Response:
        served = {c: {"model": m.name, "version": m.version} for c, m in station.models.items()}
        return JSONResponse({"status": "ok", "models": served})

    return app
