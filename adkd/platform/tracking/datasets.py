"""A run's data set as MLflow records data sets: a dataset input, so the runs table's Dataset column shows it.

The input names the data set (the last part of its root, as the experiment's default name does) and carries
adkd's content fingerprint of the category as its digest; the source is the root the user gave. The full
fingerprint stays in the run's ``data_fingerprint`` tag: MLflow keeps at most 36 characters of a digest.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

from adkd.platform.tracking.run_context import dataset_name

DIGEST_CHARS = 12  # as `adkd registry promote` prints a fingerprint; MLflow's own digests are 8 to 36
CONTEXT = "train"  # MLflow's "mlflow.data.context" tag: what the run did with the data


def _source(root: str) -> Any:
    from mlflow.data.dataset_source_registry import resolve_dataset_source
    from mlflow.data.http_dataset_source import HTTPDatasetSource

    local = "://" not in root and Path(root).expanduser().exists()
    raw = str(Path(root).expanduser().resolve()) if local else root
    try:
        with warnings.catch_warnings():  # a local path matches MLflow's local source twice; it says so
            warnings.simplefilter("ignore", UserWarning)
            return resolve_dataset_source(raw)
    except Exception:  # a root no registered MLflow source reads (e.g. a plain name): recorded as a location
        return HTTPDatasetSource(raw)


def dataset_input(root: str, category: str, fingerprint: str) -> Any:
    """The ``DatasetInput`` of a run that trained and evaluated on ``root/category`` (fingerprint: adkd's)."""
    from mlflow.data.meta_dataset import MetaDataset
    from mlflow.entities import DatasetInput, InputTag
    from mlflow.utils.mlflow_tags import MLFLOW_DATASET_CONTEXT

    dataset = MetaDataset(_source(root), name=dataset_name(root), digest=fingerprint[:DIGEST_CHARS])
    tags = [InputTag(MLFLOW_DATASET_CONTEXT, CONTEXT), InputTag("category", category)]
    return DatasetInput(dataset._to_mlflow_entity(), tags)
