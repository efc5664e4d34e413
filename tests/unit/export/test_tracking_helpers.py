"""Tracking pieces that need no server: secret redaction, fingerprints, the retrying writer, the gate."""

from __future__ import annotations

import math
import threading
import time
from pathlib import Path

import pytest
import requests
from mlflow.exceptions import MlflowException

from adkd.errors import ServiceError
from adkd.pipelines.data.fingerprint import data_fingerprint
from adkd.platform.registry.versions import gate_key
from adkd.platform.tracking.client import ResilientWriter, check_reachable, is_transient
from adkd.platform.tracking.redaction import redact
from adkd.platform.tracking.run_context import dataset_name
from adkd.platform.tracking.values import flatten


def test_flatten_and_redact_drop_secrets() -> None:
    config = {
        "model": "rd",
        "optimizer": {"lr": 0.005, "betas": [0.5, 0.999]},
        "AWS_SECRET_ACCESS_KEY": "abc",
        "s3": {"aws_access_key_id": "AKIAABCDEFGHIJKLMNOP", "endpoint": "http://user:pw@minio:9000/x"},
        "hf_token": "t",
        "db_password": "p",
        "note": "key AKIAABCDEFGHIJKLMNOP leaked",
        "api_key": "k",
    }
    flat = redact(flatten(config))
    assert flat == {
        "model": "rd",
        "optimizer.lr": 0.005,
        "optimizer.betas": [0.5, 0.999],
        "s3.endpoint": "http://minio:9000/x",
    }


def test_data_fingerprint_follows_names_and_content(tmp_path: Path) -> None:
    cat = tmp_path / "bottle" / "train" / "good"
    cat.mkdir(parents=True)
    (cat / "000.png").write_bytes(b"a")
    first = data_fingerprint(tmp_path, "bottle")
    assert len(first) == 64
    other = tmp_path / "copy"
    (other / "bottle" / "train" / "good").mkdir(parents=True)
    (other / "bottle" / "train" / "good" / "000.png").write_bytes(b"b")
    assert data_fingerprint(other, "bottle") != first
    same = tmp_path / "same"
    (same / "bottle" / "train" / "good").mkdir(parents=True)
    (same / "bottle" / "train" / "good" / "000.png").write_bytes(b"a")
    assert data_fingerprint(same, "bottle") == first
    assert data_fingerprint(tmp_path / "missing", "bottle") == ""
    assert dataset_name("s3://bucket/mvtec_ad/") == "mvtec_ad"
    assert dataset_name("/data/mvtec_ad_256") == "mvtec_ad_256"


def test_transient_errors_are_told_apart_from_rejections() -> None:
    assert is_transient(requests.ConnectionError("refused"))
    assert is_transient(MlflowException("API request to http://x/api failed with exception Max retries exceeded"))
    assert not is_transient(MlflowException("INVALID_PARAMETER_VALUE: bad metric"))
    assert not is_transient(ValueError("bad"))


class _FlakyServer:
    """A stand-in endpoint: refuses connections while ``down`` is set, records what it received."""

    def __init__(self) -> None:
        self.down = threading.Event()
        self.received: list[object] = []
        self.calls = 0

    def send(self, item: object) -> None:
        self.calls += 1
        if self.down.is_set():
            raise requests.ConnectionError("Connection refused")
        self.received.append(item)


def test_writer_buffers_during_an_outage_and_sends_in_order() -> None:
    server = _FlakyServer()
    writer = ResilientWriter(initial_backoff_s=0.02, max_backoff_s=0.1)
    writer.submit("first", lambda: server.send("first"))
    assert writer.flush(5)
    server.down.set()
    started = time.monotonic()
    for epoch in range(5):
        writer.submit_metrics(f"epoch {epoch}", lambda items: server.send(list(items)), [epoch], run_handle="run")
    writer.submit("after", lambda: server.send("after"))
    assert time.monotonic() - started < 0.5  # submitting never waits for the server
    time.sleep(0.3)
    # Nothing was lost; waiting metric batches were merged into the one being retried.
    assert 2 <= writer.backlog <= 6 and not writer.connected and writer.outages == 1
    assert server.received == ["first"] and server.calls > 2
    server.down.clear()
    assert writer.close(10)
    # The five buffered metric batches went out as one merged request, then the later write.
    assert server.received == ["first", [0, 1, 2, 3, 4], "after"]


def test_writer_drops_rejected_writes_and_reports_unsent_ones() -> None:
    server = _FlakyServer()
    writer = ResilientWriter(initial_backoff_s=0.02, max_backoff_s=0.05)

    def rejected() -> None:
        raise MlflowException("INVALID_PARAMETER_VALUE: nope")

    writer.submit("bad", rejected)
    writer.submit("good", lambda: server.send("good"))
    assert writer.flush(5)
    assert server.received == ["good"] and writer.dropped and writer.dropped[0].startswith("bad")
    server.down.set()
    writer.submit("lost 1", lambda: server.send(1))
    writer.submit("lost 2", lambda: server.send(2))
    assert writer.close(0.5) is False
    assert writer.pending_descriptions() == ["lost 1", "lost 2"]


def test_unreachable_tracking_server_is_one_clear_error() -> None:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    started = time.monotonic()
    with pytest.raises(ServiceError, match=rf"127\.0\.0\.1:{port} is unreachable.*MLFLOW_TRACKING_URI"):
        check_reachable(f"http://127.0.0.1:{port}")
    assert time.monotonic() - started < 10


def test_gate_orders_by_metric_then_aupro() -> None:
    assert gate_key({"image_auroc": 0.9, "aupro": 0.8}, "test/image_auroc") < gate_key(
        {"image_auroc": 0.9, "aupro": 0.85}, "image_auroc"
    )
    assert gate_key({"image_auroc": 0.95, "aupro": 0.1}, "image_auroc") > gate_key(
        {"image_auroc": 0.9, "aupro": 0.99}, "image_auroc"
    )
    assert gate_key({}, "image_auroc") == (-math.inf, -math.inf)


def test_flush_waits_for_a_slow_server_that_makes_progress_but_not_for_a_dead_one() -> None:
    server = _FlakyServer()
    writer = ResilientWriter(initial_backoff_s=0.02, max_backoff_s=0.05)

    def slow_upload(i: int) -> None:
        time.sleep(0.25)  # e.g. a model upload on a loaded box
        server.send(i)

    for i in range(6):  # 1.5 s of work, more than the 0.6 s flush timeout
        writer.submit(f"upload {i}", lambda i=i: slow_upload(i))
    started = time.monotonic()
    assert writer.flush(0.6)
    assert server.received == list(range(6)) and time.monotonic() - started > 1.2
    server.down.set()
    writer.submit("never", lambda: server.send("never"))
    started = time.monotonic()
    assert not writer.flush(0.6)
    assert 0.5 < time.monotonic() - started < 2.0  # gave up 0.6 s after the last progress
    assert writer.pending_descriptions() == ["never"]
    server.down.clear()
    assert writer.close(5)
