"""The CLI's own usage errors and early checks: click's message and exit 2, no traceback, no heavy import first."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]
# Runs the entry point as the `adkd` script does, then says which heavy packages were imported on the way to the
# error ("-" for none).
PROBE = (
    "import sys\n"
    "from adkd.cli.main import run\n"
    "sys.argv = ['adkd', *sys.argv[1:]]\n"
    "try:\n"
    "    run()\n"
    "except SystemExit as exc:\n"
    "    heavy = [m for m in ('torch', 'mlflow') if m in sys.modules]\n"
    "    print('exit', exc.code, ','.join(heavy) or '-', file=sys.stderr)\n"
)


def _adkd(tmp_path: Path, *args: str) -> str:
    env = {**os.environ, "PYTHONPATH": str(REPO), "ADKD_TRACKING": "off", "COLUMNS": "200"}
    proc = subprocess.run(
        [sys.executable, "-c", PROBE, *args], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr[-3000:]  # the probe caught the command's SystemExit
    return proc.stdout + proc.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["train", "--bogus"], "No such option: --bogus"),
        (["data", "import", "folder", "x", "-c", "p", "--good", "g"], "Missing option '--defect'"),
    ],
)
def test_a_usage_error_is_clicks_message_and_exit_2(tmp_path: Path, args: list[str], message: str) -> None:
    out = _adkd(tmp_path, *args)
    assert "exit 2 -" in out, out
    assert message in out and f"Usage: adkd {' '.join(args[:3] if args[0] == 'data' else args[:1])}" in out, out
    assert "Traceback" not in out, out


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--int8", "--int8-scheme", "qdq-u4"], "int8 scheme 'qdq-u4' is not one of"),
        (["--int8", "--int8-runtime", "tensorrt"], "--int8-runtime 'tensorrt' is not onnxruntime or openvino"),
        (["--int8-runtime", "openvino"], "--int8-runtime chooses the runtimes that get an int8 model: add --int8"),
        ([], "model.pt does not exist"),
    ],
)
def test_export_checks_its_flags_and_checkpoint_before_importing_torch(
    tmp_path: Path, flags: list[str], message: str
) -> None:
    out = _adkd(tmp_path, "export", "--checkpoint", str(tmp_path / "model.pt"), *flags)
    assert "exit 2 -" in out and message in out, out
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["tune", "--data", "d", "--category", "c", "--register-best"],
         "--register-best registers the best trial in MLflow, which ADKD_TRACKING=off turns off"),
        (["tune", "--data", "d", "--category", "c", "--register-best", "--no-tracking"],
         "--register-best registers the best trial in MLflow, which --no-tracking turns off"),
        (["benchmark", "g", "--register", "best"],
         "--register needs MLflow tracking, which ADKD_TRACKING=off turns off"),
    ],
)  # fmt: skip
def test_registering_with_tracking_off_is_refused_before_any_work(
    tmp_path: Path, args: list[str], message: str
) -> None:
    # _adkd runs with ADKD_TRACKING=off, which tune and benchmark ignored: they wrote MLflow runs all the same.
    out = _adkd(tmp_path, *args)
    assert "exit 2 -" in out and message in out, out
    assert list(tmp_path.iterdir()) == []


def test_jobs_without_a_cluster_say_so() -> None:
    # The message itself: through the CLI, Ray would find a local cluster another test of the suite started.
    from adkd.platform.cluster.jobs import _dashboard_hint

    assert _dashboard_hint(None).startswith("no Ray cluster was named and none runs here; pass --address http://")
    assert _dashboard_hint("http://h:8265").startswith("cannot reach the Ray Jobs API at http://h:8265; pass")


def test_predict_checks_its_inputs_before_resolving_the_model(tmp_path: Path) -> None:
    out = _adkd(tmp_path, "predict", str(tmp_path / "nope"), "--model", "models:/adkd-disc@production")
    assert "exit 2 -" in out and f"input {tmp_path / 'nope'} does not exist" in out, out
