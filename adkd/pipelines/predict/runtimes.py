"""Pick the runtime that scores an exported adkd model: one entry, ``open_predictor``, for every caller.

Every predictor has the same public face (``adkd.pipelines.predict.predictor.Predictor``): ``load``, ``run``
(uint8 NHWC batch in; maps, scores and normalised scores out), ``predict``, ``predict_loaded``, ``metadata`` /
``meta``, ``image_size``, ``image_threshold`` and ``runtime`` (the variant that actually runs it).

A model is a family of files beside each other: ``model.onnx`` (fp32), ``model.int8.onnx`` (ONNX Runtime
static int8) and ``model.ov.int8.onnx`` (NNCF int8 for OpenVINO). The variants, by name:

- ``onnxruntime``: the fp32 file in ONNX Runtime (CUDA where it has it);
- ``openvino``: the fp32 file in OpenVINO with the f32 precision hint; ``openvino-bf16``: with the bf16 hint (each
  judged by its own thresholds where the export measured it: ``adkd.pipelines.predict.variant_records``);
- ``onnxruntime-int8``, ``openvino-int8``: the int8 files;
- ``auto``: the variant ``adkd export`` timed fastest among those that passed their gates on the exporting
  machine (``runtime_choice`` in the fp32 file's metadata); ``onnxruntime`` when none was recorded, or when
  CUDA is here (the CPU timings do not apply).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from adkd.errors import ConfigError
from adkd.pipelines.predict.onnx_predictor import OnnxPredictor, available_providers
from adkd.pipelines.predict.predictor import Predictor, onnx_metadata

VARIANTS = ("onnxruntime", "openvino", "openvino-bf16", "onnxruntime-int8", "openvino-int8")
RUNTIMES = ("auto", *VARIANTS)
ALIASES = {"ort": "onnxruntime", "onnx": "onnxruntime", "ov": "openvino", "openvino-f32": "openvino"}
# The file of each variant, by suffix after the model's stem.
SUFFIXES = {
    "onnxruntime": ".onnx",
    "openvino": ".onnx",
    "openvino-bf16": ".onnx",
    "onnxruntime-int8": ".int8.onnx",
    "openvino-int8": ".ov.int8.onnx",
}
CHOICE_KEY = "runtime_choice"  # metadata of the fp32 file: what `adkd export` measured and picked


def check_runtime(runtime: str | None) -> str:
    """The canonical runtime name (None → ``auto``), or a one-line ConfigError listing the choices."""
    raw = "auto" if runtime is None else str(runtime).strip().lower()
    name = ALIASES.get(raw, raw)
    if name not in RUNTIMES:
        raise ConfigError(f"runtime {runtime!r} is not one of {', '.join(RUNTIMES)}; pass one of those")
    return name


def model_stem(path: Path) -> Path:
    """``dir/model`` for any file of the family (``model.onnx``, ``model.int8.onnx``, ``model.ov.int8.onnx``)."""
    name = path.name
    for suffix in (SUFFIXES["openvino-int8"], SUFFIXES["onnxruntime-int8"], ".onnx"):
        if name.endswith(suffix):
            return path.with_name(name.removesuffix(suffix))
    return path.with_name(path.stem)


def variant_path(path: str | Path, variant: str) -> Path:
    """The file that ``variant`` runs, beside ``path`` (any file of the same model)."""
    stem = model_stem(Path(path))
    return stem.with_name(stem.name + SUFFIXES[variant])


def file_variant(path: Path, meta: dict[str, Any]) -> str:
    """The variant a file is made for when nothing else is asked: its recorded runtime, else by precision."""
    if meta.get("precision") == "int8":
        return "openvino-int8" if meta.get("runtime") == "openvino" else "onnxruntime-int8"
    return "onnxruntime"


def recorded_choice(path: str | Path, meta: dict[str, Any] | None = None) -> dict[str, Any] | None:
    """What ``adkd export`` recorded about the variants of the model at ``path`` (None when nothing was).

    ``meta``: the metadata of ``path`` when the caller has read it already (files are parsed whole).
    """
    fp32 = variant_path(path, "onnxruntime")
    if not fp32.is_file():
        return None
    choice = (meta if meta is not None and Path(path) == fp32 else onnx_metadata(fp32)).get(CHOICE_KEY)
    return choice if isinstance(choice, dict) and choice.get("variant") in VARIANTS else None


def resolve_variant(path: Path, runtime: str) -> tuple[str, Path, str]:
    """(variant, file, why) for ``runtime`` asked of ``path``."""
    name = check_runtime(runtime)
    meta = onnx_metadata(path) if path.is_file() else {}
    is_int8 = meta.get("precision") == "int8"
    if name == "auto":
        own = file_variant(path, meta)
        if is_int8:  # an int8 file was asked for by name (--int8): its own runtime
            return own, path, f"auto: {path.name} is made for {own}"
        if "CUDAExecutionProvider" in available_providers():
            return "onnxruntime", path, "auto: CUDA is available here"
        choice = recorded_choice(path, meta)
        if choice is None:
            return "onnxruntime", path, "auto: no runtime was timed at export"
        target = variant_path(path, choice["variant"])
        if not target.is_file():
            return "onnxruntime", path, f"auto: the recorded {choice['variant']} file {target.name} is not here"
        if choice["variant"] == "openvino-bf16":
            from adkd.pipelines.predict.openvino_predictor import cpu_has_bf16

            if not cpu_has_bf16():
                return "onnxruntime", path, "auto: openvino-bf16 was fastest at export, but this CPU has no bf16"
        where = f" on {choice['cpu']}" if choice.get("cpu") else ""
        return choice["variant"], target, f"auto: fastest at export{where}"
    if name in ("onnxruntime", "openvino", "openvino-bf16"):
        if is_int8 and name == "openvino-bf16":
            raise ConfigError(f"{path.name} is an int8 model; bf16 applies to the fp32 model (drop --int8)")
        if not is_int8:
            return name, path, "asked for"
        want = f"{name}-int8"  # --int8 with a runtime: that runtime's own int8 file when there is one
        target = variant_path(path, want)
        return want, (target if target.is_file() else path), "asked for"
    target = variant_path(path, name)
    if not target.is_file():
        how = "adkd export --int8" + (" --runtime openvino" if name == "openvino-int8" else "")
        raise ConfigError(f"{target} does not exist: the {name} model is written by `{how}`")
    return name, target, "asked for"


def open_predictor(
    path: str | Path,
    runtime: str | None = "auto",
    threshold: float | None = None,
    threads: int | None = None,
    cache_dir: str | Path | None = None,
) -> Predictor:
    """A predictor for the adkd model at ``path`` on ``runtime`` (``auto``: the variant recorded at export).

    ``predictor.runtime`` names the variant that runs; ``predictor.runtime_reason`` says why it was picked.
    ``cache_dir``: where OpenVINO's converted models are kept (default ``ADKD_CACHE_DIR``, else ``~/.cache/adkd``).
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"model file {path} does not exist; export one with `adkd export`")
    variant, target, why = resolve_variant(path, runtime or "auto")
    predictor: Predictor
    if variant.startswith("openvino"):
        from adkd.pipelines.predict.openvino_predictor import OpenVinoPredictor

        precision = "bf16" if variant == "openvino-bf16" else "f32"
        predictor = OpenVinoPredictor(target, threshold=threshold, threads=threads, precision=precision,
                                      cache_dir=cache_dir)  # fmt: skip
    else:
        predictor = OnnxPredictor(target, threshold=threshold, threads=threads)
    predictor.runtime = variant
    if getattr(predictor, "own_numbers", False):  # variant_records: not the fp32 file's thresholds
        why += "; judged by its own thresholds, fitted on its scores at export"
    predictor.runtime_reason = why
    from adkd.pipelines.predict.tiled import tiled_if_needed

    return tiled_if_needed(predictor)  # a tiled model: whole images split, scored and stitched around it
