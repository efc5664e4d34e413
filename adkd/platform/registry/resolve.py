"""Find the ONNX file behind a model reference: a path, `models:/name@alias`, `models:/name/N` or a run id.

Registry models are downloaded once per version into the cache, so prediction works offline afterwards;
the alias → version answer is remembered too, for when the tracking server is out of reach.
"""

from __future__ import annotations

import json
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

from adkd.errors import ConfigError, ServiceError
from adkd.pipelines.export.schemes import INT8_SUFFIX

_MODELS_URI = re.compile(r"^models:/(?P<name>[^/@]+)(?:@(?P<alias>[^/]+)|/(?P<version>\d+))$")
_RUN_ID = re.compile(r"^[0-9a-f]{32}$")


def _find_onnx(folder: Path, what: str, int8: bool = False) -> Path:
    found = sorted(folder.rglob("*.onnx"))
    if not found:
        raise ConfigError(f"{what} holds no ONNX file; it was not produced by adkd (train or export it first)")
    chosen = [p for p in found if p.name.endswith(INT8_SUFFIX) == int8]
    if not chosen:
        raise ConfigError(
            f"{what} holds no int8 ONNX file; export one with `adkd export --int8` or train with export_int8=true"
            if int8
            else f"{what} holds only int8 ONNX files; pass int8 to use them"
        )
    return chosen[0]


def _client(tracking_uri: str) -> Any:
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)


def _alias_cache(cache_dir: Path, name: str) -> Path:
    return cache_dir / "models" / name / "aliases.json"


def _resolve_version(name: str, alias: str, tracking_uri: str, cache_dir: Path) -> str:
    from mlflow.exceptions import MlflowException

    cache_file = _alias_cache(cache_dir, name)
    try:
        client = _client(tracking_uri)
        try:
            client.get_registered_model(name)
        except MlflowException:
            raise ConfigError(
                f"registered model {name} does not exist in {tracking_uri}; list models with `adkd registry list`"
            ) from None
        try:
            version = str(client.get_model_version_by_alias(name, alias).version)
        except MlflowException:
            raise ConfigError(
                f"no version of {name} holds the alias '{alias}'; promote one with "
                f"`adkd registry promote {name} --version N --to {alias}`"
            ) from None
    except ConfigError:
        raise
    except Exception as exc:  # server unreachable: fall back to the last answer we saw
        if cache_file.is_file():
            known = json.loads(cache_file.read_text())
            if alias in known:
                return str(known[alias])
        raise ServiceError(
            f"cannot reach the MLflow server at {tracking_uri} to resolve {name}@{alias} ({exc.__class__.__name__}); "
            "start it or set MLFLOW_TRACKING_URI"
        ) from None
    cache_file.parent.mkdir(parents=True, exist_ok=True)
    known = json.loads(cache_file.read_text()) if cache_file.is_file() else {}
    known[alias] = version
    cache_file.write_text(json.dumps(known))
    return version


def _download(artifact_uri: str, target: Path, tracking_uri: str) -> Path:
    import mlflow

    if target.is_dir():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=".download-"))
    try:
        match = _MODELS_URI.match(artifact_uri)
        if match and match["version"]:
            # Resolve through our own client: the process-wide registry URI may point elsewhere.
            artifact_uri = _client(tracking_uri).get_model_version_download_uri(match["name"], match["version"])
        mlflow.artifacts.download_artifacts(artifact_uri=artifact_uri, dst_path=str(tmp), tracking_uri=tracking_uri)
        tmp.rename(target)
    except Exception as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(exc, ConfigError | ServiceError):
            raise
        raise ServiceError(f"cannot download {artifact_uri} from {tracking_uri}: {exc}") from None
    return target


def resolve_onnx(ref: str, tracking_uri: str, cache_dir: Path, int8: bool = False) -> tuple[Path, dict[str, str]]:
    """The local ONNX file for ``ref`` (its int8 sibling when ``int8``) and a description of where it came from."""
    path = Path(ref)
    if path.suffix == ".onnx":
        if not path.is_file():
            raise ConfigError(f"model file {path} does not exist; pass an .onnx file, models:/NAME@ALIAS or a run id")
        if int8 and not path.name.endswith(INT8_SUFFIX):
            sibling = path.with_name(path.name.removesuffix(".onnx") + INT8_SUFFIX)
            openvino = path.with_name(path.name.removesuffix(".onnx") + ".ov" + INT8_SUFFIX)  # NNCF's, for OpenVINO
            sibling = sibling if sibling.is_file() or not openvino.is_file() else openvino
            if not sibling.is_file():
                raise ConfigError(f"{path} has no int8 sibling {sibling.name}; write it with `adkd export --int8`")
            path = sibling
        return path, {"source": str(path)}
    if path.is_dir():
        return _find_onnx(path, f"folder {path}", int8), {"source": str(path)}
    match = _MODELS_URI.match(ref)
    if match:
        name, alias, version = match["name"], match["alias"], match["version"]
        if alias:
            version = _resolve_version(name, alias, tracking_uri, cache_dir)
        target = cache_dir / "models" / name / str(version)
        if not target.is_dir():
            try:
                _client(tracking_uri).get_model_version(name, str(version))
            except Exception as exc:
                if exc.__class__.__name__ == "MlflowException":
                    raise ConfigError(
                        f"{name} has no version {version} in {tracking_uri}; see `adkd registry list`"
                    ) from None
                raise ServiceError(f"cannot reach the MLflow server at {tracking_uri}: {exc}") from None
        folder = _download(f"models:/{name}/{version}", target, tracking_uri)
        found = _find_onnx(folder, f"{name} version {version}", int8)
        return found, {"source": ref, "name": name, "version": str(version)}
    if _RUN_ID.match(ref):
        folder = _download(f"runs:/{ref}/", cache_dir / "runs" / ref, tracking_uri)
        return _find_onnx(folder, f"run {ref}", int8), {"source": ref, "run_id": ref}
    raise ConfigError(
        f"model reference {ref!r} is not understood; use a path to an .onnx file, "
        "models:/adkd-CATEGORY@production, models:/adkd-CATEGORY/N or an MLflow run id"
    )
