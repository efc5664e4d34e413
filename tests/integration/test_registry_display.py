"""What a user sees of a trained model: the UI kind, registry descriptions, and `registry list` at 80 columns."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from mlflow import MlflowClient

from adkd.platform.registry.versions import ensure_registered_model
from adkd.platform.tracking.labels import EXPERIMENT_KIND_TAG, mark_training_experiment
from tests.cli_process import run_adkd

pytestmark = pytest.mark.integration
LONG = "a-category-with-a-rather-long-name-to-type"


def test_experiment_is_marked_as_model_training_and_the_model_is_described(promoted: dict) -> None:
    client = MlflowClient(promoted["env"]["MLFLOW_TRACKING_URI"])
    experiment = client.get_experiment_by_name("synth")  # the data set's name
    assert experiment.tags[EXPERIMENT_KIND_TAG] == "custom_model_development"

    model = client.get_registered_model("adkd-disc")
    assert "adkd anomaly detector for category 'disc'" in model.description
    metrics = promoted["metrics"]
    assert model.tags["category"] == "disc" and model.tags["model"] == "rd" and model.tags["latest_version"] == "1"
    assert float(model.tags["metric.image_auroc"]) == pytest.approx(metrics["test/image_auroc"], abs=1e-12)
    assert float(model.tags["metric.aupro"]) == pytest.approx(metrics["test/aupro"], abs=1e-12)

    version = client.get_model_version("adkd-disc", "1")
    assert version.tags["model"] == "rd" and version.tags["category"] == "disc"
    assert version.description.startswith("rd on ") and "preset cpu-smoke for 'disc'" in version.description
    assert f"image AUROC {100 * metrics['test/image_auroc']:.2f}%" in version.description
    assert f"AUPRO {100 * metrics['test/aupro']:.2f}%" in version.description
    assert version.run_id in version.description


def test_an_existing_experiment_is_marked_unless_it_has_a_kind(tmp_path: Path) -> None:
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    untagged = client.create_experiment("older-adkd", artifact_location=str(tmp_path / "a"))
    chosen = client.create_experiment("users-choice", artifact_location=str(tmp_path / "b"),
                                      tags={EXPERIMENT_KIND_TAG: "genai_development"})  # fmt: skip
    for experiment_id in (untagged, chosen):
        mark_training_experiment(client, client.get_experiment(experiment_id))
    assert client.get_experiment(untagged).tags[EXPERIMENT_KIND_TAG] == "custom_model_development"
    assert client.get_experiment(chosen).tags[EXPERIMENT_KIND_TAG] == "genai_development"


@pytest.fixture(scope="module")
def long_named(promoted: dict) -> str:
    """A second registered model with a long name (same artifacts as adkd-disc v1)."""
    client = MlflowClient(promoted["env"]["MLFLOW_TRACKING_URI"])
    v1 = client.get_model_version("adkd-disc", "1")
    ensure_registered_model(client, f"adkd-{LONG}", LONG)
    source = f"{client.get_run(v1.run_id).info.artifact_uri}/model"
    client.create_model_version(f"adkd-{LONG}", source, run_id=v1.run_id, tags={**v1.tags, "category": LONG})
    return f"adkd-{LONG}"


@pytest.mark.parametrize("columns", ["80", None], ids=["COLUMNS=80", "piped"])
def test_registry_list_never_cuts_names_or_versions(promoted: dict, long_named: str, columns: str | None) -> None:
    env = {k: v for k, v in promoted["env"].items() if k != "COLUMNS"}
    if columns:
        env["COLUMNS"] = columns
    # Captured output is not a terminal: rich then assumes 80 columns unless COLUMNS says otherwise.
    proc = run_adkd(["registry", "list"], env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert long_named in out and "adkd-disc" in out
    assert "…" not in out
    assert max(len(line) for line in out.splitlines()) <= 80
    rows = [line for line in out.splitlines() if "adkd-" in line and "│" in line]
    assert len(rows) == 2 and all(line.split("│")[2].strip() == "1" for line in rows)  # the version column, whole
    assert "not shown at 80 columns: " in out and "run id" in out.replace("\n", " ")
    listed = run_adkd(["registry", "list", "--json"], env=env, timeout=300)
    assert all(v["run_id"] for v in json.loads(listed.stdout))  # what the table hides, --json has
