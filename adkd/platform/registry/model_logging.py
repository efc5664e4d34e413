"""A run's models in MLflow: the raw ONNX graph (``mlflow.onnx``) and the pyfunc that takes encoded images."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


def _onnx_example(onnx_path: Path) -> tuple[dict[str, Any], Any]:
    import numpy as np
    import onnxruntime as ort
    from mlflow.models import infer_signature

    from adkd.pipelines.export import INPUT_NAME, read_metadata
    from adkd.pipelines.predict.onnx_predictor import session_options

    size = int(read_metadata(onnx_path)["image_size"])
    example = {INPUT_NAME: np.full((1, size, size, 3), 128, dtype=np.uint8)}
    session = ort.InferenceSession(str(onnx_path), session_options(), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    outputs = dict(zip(names, session.run(None, example)))
    return example, infer_signature(example, outputs)


def _logged_model_id(run_id: str, experiment_id: str | None, name: str, flavor: str) -> str | None:
    """Create the LoggedModel in the run's experiment: left to itself, ``Model.log`` would put it in the
    process's active experiment (often 'Default'), not the run's."""
    from mlflow import MlflowClient

    if experiment_id is None:
        return None
    client = MlflowClient()
    model = client.create_logged_model(experiment_id, name=name, source_run_id=run_id, tags={"flavor": flavor})
    return model.model_id


@contextmanager
def _quiet_model_logging() -> Iterator[None]:
    """Silence what MLflow prints on every log_model and that says nothing about this model.

    "CUDAExecutionProvider unavailable" (the input-example check loads the model on this CPU box; serving
    on a GPU host still gets CUDA), the CloudPickle notice for the pyfunc class, "Validating input example"
    and the artifact download progress bars. Errors still show.
    """
    from mlflow.environment_variables import MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR as progress_bar

    loggers = [logging.getLogger(name) for name in ("mlflow.onnx", "mlflow.pyfunc", "mlflow.models")]
    levels = [lg.level for lg in loggers]
    # MLflow takes this switch from its environment variable only: set for the call through its API, then restored.
    previous_bar = progress_bar.get() if progress_bar.is_set() else None
    progress_bar.set(False)
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)
        if previous_bar is None:
            progress_bar.unset()
        else:
            progress_bar.set(previous_bar)


def _pyfunc_requirements() -> list[str]:
    from adkd.platform.registry.pyfunc import pip_requirements

    return pip_requirements()


def log_onnx_model(onnx_path: Path, run_id: str, experiment_id: str | None = None) -> str:
    """The raw exported graph as an ``mlflow.onnx`` model of ``run_id`` (uint8 NHWC tensor in)."""
    import mlflow.onnx
    import onnx

    example, signature = _onnx_example(onnx_path)
    with _quiet_model_logging():
        info = mlflow.onnx.log_model(
            onnx.load(str(onnx_path)),
            name="onnx",
            signature=signature,
            input_example=example,
            pip_requirements=[r for r in _pyfunc_requirements() if not r.startswith("pillow")],
            save_as_external_data=False,
            run_id=run_id,
            model_id=_logged_model_id(run_id, experiment_id, "onnx", "onnx"),
        )
    return info.model_uri


def log_pyfunc_model(
    onnx_path: Path, run_id: str, experiment_id: str | None = None, int8_path: Path | None = None
) -> Any:
    """The registered model: ``registry.pyfunc.OnnxAnomalyModel`` over ``onnx_path`` (and the int8 file)."""
    import mlflow.pyfunc
    from mlflow.models import Model

    from adkd.pipelines.export import read_metadata
    from adkd.pipelines.predict.runtimes import variant_path
    from adkd.platform.registry.pyfunc import (
        INT8_ARTIFACT,
        ONNX_ARTIFACT,
        OV_INT8_ARTIFACT,
        OnnxAnomalyModel,
        signature_and_example,
    )

    meta = read_metadata(onnx_path)
    # The files beside model.onnx that runtime=auto may pick (its metadata names the fastest): same folder.
    ov_int8 = variant_path(onnx_path, "openvino-int8")
    extra = {OV_INT8_ARTIFACT: str(ov_int8)} if ov_int8.is_file() else {}
    signature, example = signature_and_example(int(meta["image_size"]))
    with _quiet_model_logging():
        return Model.log(
            artifact_path=None,
            name="model",
            flavor=mlflow.pyfunc,
            python_model=OnnxAnomalyModel(),
            artifacts={
                ONNX_ARTIFACT: str(onnx_path),
                **({INT8_ARTIFACT: str(int8_path)} if int8_path else {}),
                **extra,
            },
            signature=signature,
            input_example=example,
            pip_requirements=_pyfunc_requirements(),
            metadata={k: meta[k] for k in ("model", "backbone", "category", "image_size") if k in meta},
            run_id=run_id,
            model_id=_logged_model_id(run_id, experiment_id, "model", "python_function"),
        )
