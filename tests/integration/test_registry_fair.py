"""Fair promotion on two data versions: numbers from different data are never compared, both models are re-scored.

Production (v1) is a model trained and tested on a synthetic category. The candidate (v2) is another model
trained on an altered copy whose test split keeps only images production ranks perfectly and the candidate
does not: on paper (stored numbers) the candidate wins, re-scored on the candidate's own data production wins.
The subset is chosen from the two models' scores. A model's weights do not depend on the test split and
training is deterministic, so the candidate is trained once untracked on the original to read its scores, then
again, tracked, on the copy.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from mlflow import MlflowClient

import adkd
from adkd.pipelines.data.fingerprint import data_fingerprint
from adkd.pipelines.data.mvtec import list_items
from adkd.pipelines.data.synthetic_dataset import synthesize
from adkd.pipelines.evaluate.artifact_metrics import metrics_on_data
from adkd.pipelines.evaluate.metrics import image_auroc
from adkd.pipelines.predict import open_predictor
from tests.cli_process import run_adkd

pytestmark = pytest.mark.integration
CATEGORY = "disc"
TRAIN = ["--category", CATEGORY, "--model", "stfpm", "--preset", "cpu-smoke", "--set", "num_threads=1"]


def _adkd(env: dict[str, str], cwd: Path, *args: str, ok: bool = True) -> subprocess.CompletedProcess[str]:
    return run_adkd(args, env=env, cwd=cwd, timeout=900, ok=ok)


def _test_scores(onnx: Path, root: Path) -> tuple[np.ndarray, np.ndarray, list[Path]]:
    items = [item for item in list_items(root, CATEGORY) if item.split == "test"]
    predictions = open_predictor(onnx).predict([item.image_path for item in items])
    labels = np.array([item.label for item in items])
    return np.array([p.score for p in predictions]), labels, [item.image_path for item in items]


def _easy_subset(prod: np.ndarray, cand: np.ndarray, labels: np.ndarray, prod_auroc: float) -> np.ndarray:
    """Test images production ranks perfectly and on which the candidate scores between production's full-split
    AUROC and 1: the stored numbers then favour the candidate, the re-scored ones production."""
    best, margin = None, 0.0
    for cut in np.unique(prod):
        keep = ((labels == 0) & (prod < cut)) | ((labels == 1) & (prod >= cut))
        if min((labels[keep] == 0).sum(), (labels[keep] == 1).sum()) < 2:
            continue
        cand_auroc = image_auroc(cand[keep], labels[keep])
        room = min(cand_auroc - prod_auroc, 1.0 - cand_auroc)
        if room > margin:
            best, margin = keep, room
    assert best is not None, f"no subset separates the models: production {prod}, candidate {cand}, labels {labels}"
    return best


@pytest.fixture(scope="module")
def fair(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    work = tmp_path_factory.mktemp("fair")
    env = dict(os.environ, MLFLOW_TRACKING_URI=f"sqlite:///{work / 'mlflow.db'}", ADKD_RUNS_DIR=str(work / "runs"),
               ADKD_CACHE_DIR=str(work / "cache"), COLUMNS="200", MLFLOW_EXPERIMENT_NAME="from-env")  # fmt: skip
    env.pop("ADKD_EXPERIMENT", None)
    synth, easy = work / "synth", work / "synth-easy"
    synthesize(synth, [CATEGORY], n_train=12, n_test=24)  # `adkd data synth` with these counts
    # Production: trained and tested on the original (logged to MLFLOW_EXPERIMENT_NAME's experiment).
    _adkd(env, work, "train", *TRAIN, "--data", str(synth), "--set", "epochs=3", "--out", str(work / "prod"))
    _adkd(env, work, "registry", "promote", CATEGORY, "--version", "1", "--to", "production")
    prod_onnx = work / "prod" / "stfpm" / CATEGORY / "model.onnx"
    # The candidate's weights do not depend on the test split: read its scores from an untracked twin, trained in
    # this process (the settings of TRAIN; no command of its own to prove).
    twin = adkd.train(CATEGORY, synth, "stfpm", "cpu-smoke", ["num_threads=1", "epochs=1"], out=work / "twin",
                      tracking=False)  # fmt: skip
    assert twin.status == "FINISHED", twin.error
    prod, labels, paths = _test_scores(prod_onnx, synth)
    cand, _, _ = _test_scores(work / "twin" / "stfpm" / CATEGORY / "model.onnx", synth)
    prod_auroc = metrics_on_data(prod_onnx, synth, CATEGORY).metrics["image_auroc"]
    keep = _easy_subset(prod, cand, labels, prod_auroc)
    shutil.copytree(synth, easy)
    for path, kept in zip(paths, keep, strict=True):
        if not kept:
            copy = easy / path.relative_to(synth)
            copy.unlink()
            for mask in (easy / CATEGORY / "ground_truth" / copy.parent.name).glob(f"{copy.stem}*"):
                mask.unlink()
    candidate = _adkd(env, work, "train", *TRAIN, "--data", str(easy), "--set", "epochs=1", "--out",
                      str(work / "cand"), "--experiment-name", "from-flag", "--run-name", "candidate")  # fmt: skip
    return {
        "work": work,
        "env": env,
        "synth": synth,
        "easy": easy,
        "prod_auroc": prod_auroc,
        "cand_auroc": image_auroc(cand, labels),
        "cand_easy_auroc": image_auroc(cand[keep], labels[keep]),
        "register_stderr": candidate.stderr,
    }


def _stored(client: MlflowClient, version: str) -> float:
    return float(client.get_model_version(f"adkd-{CATEGORY}", version).tags["metric.image_auroc"])


def _holder(client: MlflowClient) -> str:
    return str(client.get_registered_model(f"adkd-{CATEGORY}").aliases["production"])


def test_numbers_from_different_data_are_re_scored_and_the_re_scored_ones_decide(fair: dict[str, Any]) -> None:
    env, work, easy = fair["env"], fair["work"], fair["easy"]
    client = MlflowClient(env["MLFLOW_TRACKING_URI"])
    v1, v2 = client.get_model_version(f"adkd-{CATEGORY}", "1"), client.get_model_version(f"adkd-{CATEGORY}", "2")
    assert v1.tags["data_fingerprint"] == data_fingerprint(fair["synth"], CATEGORY)
    assert v2.tags["data_fingerprint"] == data_fingerprint(easy, CATEGORY) != v1.tags["data_fingerprint"]
    assert (v1.tags["dataset"], v2.tags["dataset"]) == ("synth", "synth-easy")
    assert v2.tags["data"] == str(easy)
    # On paper the candidate is better: its numbers come from the easier copy.
    assert _stored(client, "2") > _stored(client, "1")
    assert _stored(client, "2") == pytest.approx(fair["cand_easy_auroc"], abs=1e-6)
    # Registering it into the model of the other data set said so, in one line, with the way out.
    warning = [line for line in fair["register_stderr"].splitlines() if "holds versions of data set" in line]
    assert len(warning) == 1 and "'synth'" in warning[0] and "{dataset}" in warning[0], fair["register_stderr"]

    refused = _adkd(env, work, "registry", "promote", CATEGORY, "--version", "2", "--to", "production", ok=False)
    assert refused.returncode == 2, refused.stdout + refused.stderr
    assert _holder(client) == "1"
    error = [line for line in refused.stderr.splitlines() if line.strip()]
    assert len(error) == 1 and f"re-scored on {easy}" in error[0] and "--force" in error[0], refused.stderr
    # Both sets of numbers, and which data: each version's stored ones on its own data, the re-scored on the copy.
    out = refused.stdout
    rows = {(cells[1], cells[2]): cells for cells in _table_rows(out)}
    assert rows[("2", "stored")][3].startswith("synth-easy") and rows[("1", "stored")][3].startswith("synth (")
    assert rows[("1", "re-scored")][3].startswith(str(easy)) and rows[("2", "re-scored")][3].startswith(str(easy))
    assert rows[("1", "re-scored")][4] == "100.00"  # production ranks every image of the copy right
    assert rows[("2", "re-scored")][4] == f"{100 * fair['cand_easy_auroc']:.2f}" == rows[("2", "stored")][4]
    assert rows[("1", "stored")][4] == f"{100 * _stored(client, '1'):.2f}"
    record = [r for r in _audit(client) if r["action"] == "refused"][-1]
    assert record["compared_on"] == "re-scored" and record["data"] == str(easy)
    assert record["rescored"]["1"]["image_auroc"] == 1.0

    # --all --best follows the same rule: the stored numbers would pick v2, the re-scored ones keep v1.
    best = _adkd(env, work, "registry", "promote", "--all", "--best", "--to", "production")
    assert f"adkd-{CATEGORY}@production is already version 1" in best.stdout, best.stdout
    assert "re-scored" in best.stdout and str(easy) in best.stdout
    assert _holder(client) == "1"

    # --data names the root to compare on: here production's own data, where v1 re-scores as it stored.
    on_synth = _adkd(env, work, "registry", "promote", CATEGORY, "--version", "2", "--to", "production",
                     "--data", str(fair["synth"]), ok=False)  # fmt: skip
    rows = {(cells[1], cells[2]): cells for cells in _table_rows(on_synth.stdout)}
    assert rows[("1", "re-scored")][4] == f"{100 * fair['prod_auroc']:.2f}" == rows[("1", "stored")][4]
    assert rows[("2", "re-scored")][4] == f"{100 * fair['cand_auroc']:.2f}"
    assert on_synth.returncode == (2 if fair["cand_auroc"] < fair["prod_auroc"] else 0), on_synth.stderr
    if on_synth.returncode == 0:
        _adkd(env, work, "registry", "rollback", CATEGORY)


def test_data_that_cannot_be_reached_refuses_unless_forced(fair: dict[str, Any]) -> None:
    env, work, easy = fair["env"], fair["work"], fair["easy"]
    client = MlflowClient(env["MLFLOW_TRACKING_URI"])
    moved = easy.with_name("synth-easy-moved")
    easy.rename(moved)
    try:
        refused = _adkd(env, work, "registry", "promote", CATEGORY, "--version", "2", "--to", "production", ok=False)
        assert refused.returncode == 2 and "Traceback" not in refused.stderr
        error = [line for line in refused.stderr.splitlines() if line.strip()]
        assert len(error) == 1 and str(easy) in error[0] and "--force" in error[0], refused.stderr
        assert _holder(client) == "1"
        forced = _adkd(env, work, "registry", "promote", CATEGORY, "--version", "2", "--to", "production",
                       "--force", "--reason", "data moved")  # fmt: skip
        assert "(forced)" in forced.stdout and _holder(client) == "2"
    finally:
        moved.rename(easy)
        _adkd(env, work, "registry", "rollback", CATEGORY)


def test_runs_name_their_experiment_run_and_data_set_as_mlflow_does(fair: dict[str, Any]) -> None:
    client = MlflowClient(fair["env"]["MLFLOW_TRACKING_URI"])
    for experiment, root, parent_name in (("from-env", fair["synth"], None), ("from-flag", fair["easy"], "candidate")):
        exp = client.get_experiment_by_name(experiment)
        assert exp is not None, experiment
        runs = client.search_runs([exp.experiment_id])
        child = next(r for r in runs if "mlflow.parentRunId" in r.data.tags)
        parent = next(r for r in runs if "mlflow.parentRunId" not in r.data.tags)
        if parent_name:
            assert parent.data.tags["mlflow.runName"] == parent_name
        (dataset,) = [d.dataset for d in child.inputs.dataset_inputs]  # the runs table's Dataset column
        assert dataset.name == root.name
        assert dataset.digest == data_fingerprint(root, CATEGORY)[:12] == child.data.tags["data_fingerprint"][:12]
        assert json.loads(dataset.source)["uri"] == str(root)


def _audit(client: MlflowClient) -> list[dict[str, Any]]:
    from adkd.platform.registry.versions import audit_trail

    return audit_trail(client, CATEGORY)


def _table_rows(out: str) -> list[list[str]]:
    """The cells of the comparison table's rows (rich's box characters split them)."""
    rows = []
    for line in out.splitlines():
        cells = [c.strip() for c in line.split("│")]
        if len(cells) > 4 and cells[2] in ("stored", "re-scored"):
            rows.append(cells)
    return rows


def test_the_name_template_keeps_two_data_sets_categories_apart(fair: dict[str, Any], tmp_path: Path) -> None:
    """The two data sets' `disc` models, tracked with registered_model_name = adkd-{category}-{dataset}, land in
    two registered models; a category with two models must then be named."""
    from adkd.pipelines.train.callbacks import TrainResult
    from adkd.platform.registry.publishing import RegistryPublisher
    from adkd.platform.tracking.session import TrackingSession
    from adkd.settings import load_settings

    env = {**fair["env"], "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}",
           "ADKD_REGISTERED_MODEL_NAME": "adkd-{category}-{dataset}"}  # fmt: skip
    settings = load_settings(tracking_uri=env["MLFLOW_TRACKING_URI"], runs_dir=tmp_path / "runs",
                             registered_model_name=env["ADKD_REGISTERED_MODEL_NAME"])  # fmt: skip
    for root, out in ((fair["synth"], "prod"), (fair["easy"], "cand")):
        run_dir = fair["work"] / out / "stfpm" / CATEGORY
        config = json.loads((run_dir / "config.json").read_text())
        result = TrainResult(CATEGORY, "stfpm", "FINISHED", run_dir, metrics=json.loads(
            (run_dir / "metrics.json").read_text()), config=config, onnx_path=run_dir / "model.onnx",
            data_fingerprint=data_fingerprint(root, CATEGORY))  # fmt: skip
        session = TrackingSession.from_settings(
            settings, str(root), "train", publisher=RegistryPublisher(settings.registered_model_name)
        )
        tracker = session.child(CATEGORY, preset="cpu-smoke")
        tracker.on_start(config)
        tracker.on_end(result)
        summary = session.finish()
        assert summary.complete and summary.registered == {CATEGORY: "1"}, summary.message
    client = MlflowClient(env["MLFLOW_TRACKING_URI"])
    models = {m.name: m for m in client.search_registered_models()}
    assert set(models) == {f"adkd-{CATEGORY}-synth", f"adkd-{CATEGORY}-synth-easy"}
    assert models[f"adkd-{CATEGORY}-synth-easy"].tags["dataset"] == "synth-easy"

    ambiguous = _adkd(env, fair["work"], "registry", "promote", CATEGORY, "--version", "1", "--to", "production",
                      ok=False)  # fmt: skip
    assert ambiguous.returncode == 2
    assert f"adkd-{CATEGORY}-synth, adkd-{CATEGORY}-synth-easy" in ambiguous.stderr and "name one" in ambiguous.stderr
    named = _adkd(env, fair["work"], "registry", "promote", f"adkd-{CATEGORY}-synth-easy", "--version", "1",
                  "--to", "production")  # fmt: skip
    assert f"adkd-{CATEGORY}-synth-easy@production: version - → 1" in named.stdout
