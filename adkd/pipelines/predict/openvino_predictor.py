"""Run an adkd ONNX model with OpenVINO on the CPU: the same file, the same outputs, another runtime.

OpenVINO reads the exported ONNX as it is. The converted model (OpenVINO IR) is cached on disk under
``<cache_dir>/openvino/<sha256 of the ONNX graph>/`` so the next load skips the conversion; a cache that
cannot be written is skipped, never an error. The key leaves the file's metadata out (adkd reads the metadata from
the file, never from the IR), so writing metrics or a runtime choice into a file keeps its cache entry.

Precision is chosen, not inherited: on CPUs with bf16 (AVX512-BF16, AMX) OpenVINO runs float graphs in bf16
unless told otherwise, which moves anomaly maps and scores away from the fp32 thresholds they were fitted
with. So the fp32 model runs with the ``f32`` inference-precision hint, the ``bf16`` variant asks for bf16
explicitly, and int8 graphs run their float parts (preprocessing, anomaly map, scores) in f32. Where the export
measured a variant of the fp32 file on its own (``adkd.pipelines.predict.variant_records``), its predictor
judges with that variant's own thresholds and reports its own metrics; the graph's normalised score, computed
with the fp32 constants, is recomputed from them.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import threading
from pathlib import Path
from typing import Any

import numpy as np

from adkd.errors import ConfigError, first_line
from adkd.pipelines.predict.predictor import OUTPUTS, Predictor, onnx_metadata, thread_budget
from adkd.pipelines.predict.variant_records import with_variant_numbers
from adkd.settings import cache_root

PRECISIONS = ("f32", "bf16")
CACHE_SUBDIR = "openvino"


def _core() -> Any:
    import openvino as ov

    return ov.Core()


def cpu_has_bf16() -> bool:
    """Whether OpenVINO's CPU plugin can run bf16 here (AVX512-BF16 or AMX)."""
    return "BF16" in _core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")


def graph_digest(path: Path) -> str:
    """SHA-256 of the ONNX model at ``path`` without its metadata_props (what OpenVINO converts)."""
    import onnx

    proto = onnx.load(str(path))
    del proto.metadata_props[:]
    return hashlib.sha256(proto.SerializeToString(deterministic=True)).hexdigest()[:32]


def _save_ir(model: Any, folder: Path) -> None:
    """Write ``model.xml``/``model.bin`` into ``folder`` all at once (a staged folder renamed into place)."""
    import openvino as ov

    folder.parent.mkdir(parents=True, exist_ok=True)
    staged = Path(tempfile.mkdtemp(dir=folder.parent, prefix=".staging-"))
    try:
        # compress_to_fp16=False: save_model halves float weights by default, which would change the numbers.
        ov.save_model(model, str(staged / "model.xml"), compress_to_fp16=False)
        staged.chmod(0o755)  # mkdtemp's 0700 would hide the cache from the other users of the folder
        os.replace(staged, folder)
    except OSError:
        pass  # another process won the race, or the disk is read-only: the model in memory is the same
    finally:
        if staged.exists():
            for child in staged.iterdir():
                child.unlink()
            staged.rmdir()


def read_model(path: Path, cache_dir: Path | None = None, cache: bool = True) -> tuple[Any, str]:
    """The OpenVINO model of an ONNX file and where it came from (``cache`` or ``converted``)."""
    core = _core()
    if not cache:
        try:
            return core.read_model(str(path)), "converted"
        except RuntimeError as exc:
            raise ConfigError(f"OpenVINO cannot read {path}: {first_line(exc)}") from None
    folder = (cache_dir or cache_root()) / CACHE_SUBDIR / graph_digest(path)
    cached = folder / "model.xml"
    if cached.is_file() and (folder / "model.bin").is_file():
        try:
            return core.read_model(str(cached)), "cache"
        except RuntimeError:
            pass  # a damaged cache entry: convert again and overwrite it below
    try:
        model = core.read_model(str(path))
    except RuntimeError as exc:
        raise ConfigError(f"OpenVINO cannot read {path}: {first_line(exc)}") from None
    try:
        if folder.exists():
            for child in folder.iterdir():
                child.unlink()
            folder.rmdir()
        _save_ir(model, folder)
    except OSError:
        pass
    return model, "converted"


class OpenVinoPredictor(Predictor):
    """Loads an adkd ONNX file once into OpenVINO (CPU) and predicts batches of images."""

    def __init__(
        self,
        onnx_path: str | Path,
        threshold: float | None = None,
        threads: int | None = None,
        precision: str = "f32",
        cache_dir: str | Path | None = None,
        cache: bool = True,
    ):
        path = Path(onnx_path)
        if not path.is_file():
            raise ConfigError(f"model file {path} does not exist; export one with `adkd export`")
        if precision not in PRECISIONS:
            raise ConfigError(f"OpenVINO precision {precision!r} is not one of {', '.join(PRECISIONS)}")
        if precision == "bf16" and not cpu_has_bf16():
            raise ConfigError("this CPU has no bf16 support (AVX512-BF16/AMX): use runtime openvino (f32)")
        meta = onnx_metadata(path)
        model, self.source = read_model(path, Path(cache_dir) if cache_dir else None, cache)
        names = [out.get_any_name() for out in model.outputs]
        if not set(OUTPUTS) <= set(names):
            raise ConfigError(f"{path} is not an adkd model (outputs {names}, expected {', '.join(OUTPUTS)})")
        self.precision = precision
        config: dict[str, Any] = {"INFERENCE_PRECISION_HINT": precision, "PERFORMANCE_HINT": "LATENCY"}
        if threads := thread_budget(threads):
            config["INFERENCE_NUM_THREADS"] = threads
        self.compiled = _core().compile_model(model, "CPU", config)
        self._outputs = [self.compiled.output(name) for name in OUTPUTS]
        self._local = threading.local()  # an infer request is not thread-safe: one per serving thread
        int8 = meta.get("precision") == "int8"
        self.runtime = "openvino-int8" if int8 else ("openvino" if precision == "f32" else f"openvino-{precision}")
        self.own_numbers = False  # judged by numbers measured on this variant (not the fp32 file's)
        if not int8:
            meta, self.own_numbers = with_variant_numbers(meta, self.runtime)
        self._configure(path, meta, threshold)

    def run(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Raw outputs for a uint8 [B, S, S, 3] batch: maps [B, S, S], scores [B], normalised [B]."""
        request = getattr(self._local, "request", None)
        if request is None:
            request = self._local.request = self.compiled.create_infer_request()
        result = request.infer({0: np.ascontiguousarray(batch)})
        # Copies: the request reuses its output buffers on the next call.
        amap, score, norm = (np.array(result[out]) for out in self._outputs)
        score = score.reshape(-1)
        # The graph normalised with the fp32 file's constants; this variant's own thresholds say otherwise.
        norm = self.normalized(score) if self.own_numbers else norm.reshape(-1)
        return amap.reshape(len(batch), *amap.shape[-2:]), score, norm
