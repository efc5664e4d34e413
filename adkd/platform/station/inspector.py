"""One image in, one logged verdict out: the station's core, shared by the page, the JSON API and the watcher.

Order of work for an image: check and decode it (nothing written), score it, then keep its files (flagged
parts always, passed ones as a sample) and only then insert its row; a failed insert removes the files it
had just written, so the log and the store never disagree.
"""

from __future__ import annotations

import contextlib
import io
import re
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from adkd.errors import AdkdError, DataError, ServiceError
from adkd.pipelines.predict.outputs import PNG_LEVEL, heatmap_overlay
from adkd.platform.registry.resolve import resolve_onnx
from adkd.platform.station.images import ImageStore, Upload, check_upload, new_key
from adkd.platform.station.log import VerdictLog, VerdictRecord
from adkd.platform.station.served import ModelSpec, ServedModel, load_model

OVERLAY_SIDE = 768  # overlays are shown and kept at most this large: the page needs no more
DEFECT_TYPE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,47}$")
_CACHE_BYTES = 128 * 1024 * 1024


@dataclass
class Inspection:
    """What the page shows for one image."""

    verdict_id: int
    category: str
    name: str
    verdict: str
    score: float
    normalized_score: float
    threshold: float
    latency_ms: float
    model: ServedModel
    overlay_png: bytes
    kept: bool
    sha256: str
    source: str
    width: int
    height: int
    notes: list[str] = field(default_factory=list)

    @property
    def anomalous(self) -> bool:
        return self.verdict == "anomalous"


def overlay_png(pred_map: np.ndarray, original: np.ndarray, vmin: float, vmax: float) -> bytes:
    """The image with its heatmap over it, at most ``OVERLAY_SIDE`` on the long side, as PNG bytes."""
    h, w = pred_map.shape  # the predictors give the map at the original's size
    scale = min(1.0, OVERLAY_SIDE / max(h, w))
    if scale < 1.0:
        size = (max(1, round(w * scale)), max(1, round(h * scale)))
        original = np.asarray(Image.fromarray(original).resize(size, Image.Resampling.BILINEAR))
        pred_map = np.asarray(Image.fromarray(pred_map.astype(np.float32)).resize(size, Image.Resampling.BILINEAR))
    buf = io.BytesIO()
    Image.fromarray(heatmap_overlay(original, pred_map, vmin, vmax)).save(buf, format="PNG", compress_level=PNG_LEVEL)
    return buf.getvalue()


def clean_defect_type(value: str | None) -> str | None:
    """A defect type as a folder name (lowercase, ``_`` for spaces), or a DataError saying what is allowed."""
    if value is None or not value.strip():
        return None
    text = re.sub(r"\s+", "_", value.strip().lower())
    if not DEFECT_TYPE.match(text):
        raise DataError(
            f"defect type {value[:60]!r} is not usable as a folder name; use letters, digits, '-' or '_' "
            "(at most 48), e.g. scratch"
        )
    return text


class Station:
    """The served models, the verdict log and the image store, behind one ``inspect`` call."""

    def __init__(
        self,
        specs: list[ModelSpec],
        log: VerdictLog,
        store: ImageStore,
        *,
        tracking_uri: str,
        cache_dir: Path,
        registry: Any = None,
        runtime: str = "auto",
        keep_passed: float = 0.05,
        max_upload_bytes: int = 20_000_000,
    ) -> None:
        self.specs = list(specs)
        self.log = log
        self.store = store
        self.tracking_uri = tracking_uri
        self.registry = registry  # an MlflowClient for the versions' facts; None: offline
        self.cache_dir = cache_dir
        self.runtime = runtime
        self.keep_passed = keep_passed
        self.max_upload_bytes = max_upload_bytes
        self.models: dict[str, ServedModel] = {}
        self._lock = threading.Lock()
        self._unkept: OrderedDict[int, tuple[Upload, bytes]] = OrderedDict()
        self._unkept_bytes = 0

    # -- models
    def load(self) -> None:
        """Load every spec (a failure stops the start: a station must not serve half its line)."""
        for spec in self.specs:
            served = load_model(spec, self.tracking_uri, self.cache_dir, self.runtime, self.registry)
            self.log.record_model(served.reference_entry())
            self.models[served.category] = served

    def refresh(self) -> list[str]:
        """Re-resolve alias specs; swap in a newly promoted version. Returns what changed, one line each."""
        changed = []
        for spec in self.specs:
            if spec.version:
                continue
            current = self.models.get(spec.category)
            try:
                # Resolving is cheap once a version is cached; only a new version is opened.
                _, origin = resolve_onnx(spec.reference, self.tracking_uri, self.cache_dir)
                if current is not None and str(origin["version"]) == current.version:
                    continue
                fresh = load_model(spec, self.tracking_uri, self.cache_dir, self.runtime, self.registry)
            except AdkdError:
                continue  # registry out of reach: keep serving what is loaded
            if current is None or fresh.version != current.version:
                self.log.record_model(fresh.reference_entry())
                self.models[spec.category] = fresh
                was = f"v{current.version}" if current else "nothing"
                changed.append(f"{spec.category}: {fresh.name} v{fresh.version} now serves {spec} (was {was})")
        return changed

    def model_for(self, category: str) -> ServedModel:
        served = self.models.get(category)
        if served is None:
            known = ", ".join(sorted(self.models)) or "none"
            raise DataError(f"category {category[:60]!r} is not served by this station (it serves: {known})")
        return served

    # -- inspection
    def _keep(self, anomalous: bool, sha256: str) -> bool:
        if anomalous:
            return True
        # A deterministic sample: the same file is kept or not whichever client sends it.
        return int(sha256[:8], 16) / 0xFFFFFFFF < self.keep_passed

    def inspect(self, category: str, data: bytes, filename: str | None, source: str) -> Inspection:
        """Check, score, keep and log one image; a DataError names what is wrong with the input."""
        served = self.model_for(category)
        start = time.perf_counter()
        upload = check_upload(data, filename, self.max_upload_bytes)
        predictor = served.predictor
        loaded = predictor.load(upload.image)
        pred = predictor.predict_loaded([loaded], [upload.display_name])[0]
        latency_ms = (time.perf_counter() - start) * 1000.0
        vmin, vmax = served.heat_range
        overlay = overlay_png(pred.anomaly_map, loaded.original, vmin, vmax)
        verdict = "anomalous" if pred.anomalous else "normal"
        keep = self._keep(pred.anomalous, upload.sha256)
        image_key = overlay_key = None
        if keep:
            image_key, overlay_key = self._put(category, upload, overlay)
        record = VerdictRecord(
            category=category,
            model_name=served.name,
            model_version=served.version,
            image_sha256=upload.sha256,
            score=pred.score,
            normalized_score=pred.normalized_score,
            threshold=served.threshold,
            verdict=verdict,
            latency_ms=latency_ms,
            source=source,
            width=upload.image.width,
            height=upload.image.height,
            image_key=image_key,
            overlay_key=overlay_key,
        )
        try:
            verdict_id = self.log.add_verdict(record)
        except Exception as exc:
            self._drop(image_key, overlay_key)
            raise ServiceError(
                f"the verdict for {upload.display_name} could not be logged ({exc}); nothing was kept"
            ) from None
        if not keep:
            self._remember(verdict_id, upload, overlay)
        return Inspection(
            verdict_id=verdict_id,
            category=category,
            name=upload.display_name,
            verdict=verdict,
            score=pred.score,
            normalized_score=pred.normalized_score,
            threshold=served.threshold,
            latency_ms=latency_ms,
            model=served,
            overlay_png=overlay,
            kept=keep,
            sha256=upload.sha256,
            source=source,
            width=upload.image.width,
            height=upload.image.height,
            notes=upload.notes + list(pred.notes),
        )

    def _put(self, category: str, upload: Upload, overlay: bytes) -> tuple[str, str]:
        image_key = new_key(category, upload.extension)
        overlay_key = image_key.rsplit(".", 1)[0] + ".overlay.png"
        self.store.put(image_key, upload.data)
        try:
            self.store.put(overlay_key, overlay)
        except Exception:
            self._drop(image_key, None)
            raise
        return image_key, overlay_key

    def _drop(self, *keys: str | None) -> None:
        for key in keys:
            if key:
                # best effort: the row was never written, so nothing points at the file
                with contextlib.suppress(Exception):
                    self.store.delete(key)

    def _remember(self, verdict_id: int, upload: Upload, overlay: bytes) -> None:
        """Passed images that were not kept stay in memory a while, so feedback on them can still keep them."""
        with self._lock:
            self._unkept[verdict_id] = (upload, overlay)
            self._unkept_bytes += len(upload.data) + len(overlay)
            while self._unkept and self._unkept_bytes > _CACHE_BYTES:
                _, (old, old_overlay) = self._unkept.popitem(last=False)
                self._unkept_bytes -= len(old.data) + len(old_overlay)

    # -- feedback
    def feedback(self, verdict_id: int, correct: bool, defect_type: str | None) -> dict:
        """Store the operator's word beside the verdict; a wrong pass's image is kept if still in memory."""
        row = self.log.verdict(verdict_id)
        if row is None:
            raise DataError(f"verdict {verdict_id} does not exist; reload the page")
        kind = clean_defect_type(defect_type)
        is_defect = (row["verdict"] == "anomalous") == correct  # confirmed flag, or a missed defect
        if not is_defect:
            kind = None  # a good part has no defect type
        if row["image_key"] is None:
            with self._lock:
                cached = self._unkept.pop(verdict_id, None)
                if cached:
                    self._unkept_bytes -= len(cached[0].data) + len(cached[1])
            if cached:
                image_key, overlay_key = self._put(row["category"], *cached)
                self.log.set_image_keys(verdict_id, image_key, overlay_key)
        self.log.set_feedback(verdict_id, correct, kind)
        return self.log.verdict(verdict_id) or row
