"""The station's parts without a model: upload checks, the verdict log, the image store, the token gate."""

from __future__ import annotations

import asyncio
import io
import struct
import zlib
from pathlib import Path
from types import SimpleNamespace

import pytest
from PIL import Image

from adkd.errors import ConfigError, DataError
from adkd.platform.station.access import TokenGate, check_bind, is_loopback
from adkd.platform.station.feedback_data import destination
from adkd.platform.station.images import LocalImageStore, check_upload, display_name, new_key
from adkd.platform.station.inspector import clean_defect_type
from adkd.platform.station.log import VerdictLog, VerdictRecord
from adkd.platform.station.served import ModelSpec, load_model, parse_spec, resolve_specs

MB = 1_000_000


def _png(width: int, height: int, colour: tuple[int, int, int] = (120, 60, 30)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (width, height), colour).save(buf, format="PNG")
    return buf.getvalue()


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG that announces ``width`` x ``height`` and holds no pixels: its size is read from the header alone."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b"")


def test_a_good_upload_is_decoded_hashed_and_named_by_the_station() -> None:
    data = _png(32, 24)
    up = check_upload(data, "part-001.png", 5 * MB)
    assert up.image.size == (32, 24) and up.extension == "png" and len(up.sha256) == 64
    assert up.display_name == "part-001.png" and not up.notes
    key = new_key("disc", up.extension)
    assert key.startswith("disc/") and key.endswith(".png") and "part-001" not in key


@pytest.mark.parametrize(
    ("data", "name", "words"),
    [
        (b"", "empty.png", "the file is empty"),
        (b"hello, this is text and not a picture", "notes.png", "not an image"),
        (_png_header_only(10_000, 10_000), "huge.png", "10000x10000 pixels is more than"),
        (_png(8, 8) * 800_000, "big.png", "more than the station accepts"),
        (_png(64, 64)[:60], "cut.png", "cannot be decoded"),
    ],
    ids=["empty", "text", "10000x10000", "over-size-limit", "truncated"],
)
def test_bad_uploads_get_one_line_naming_the_file_and_the_reason(data: bytes, name: str, words: str) -> None:
    with pytest.raises(DataError) as err:
        check_upload(data, name, 5 * MB)
    assert words in str(err.value) and str(err.value).startswith(name)


def test_path_like_names_are_shown_as_their_last_part_with_a_note() -> None:
    shown, notes = display_name("../../etc/passwd.png")
    assert shown == "passwd.png" and "held a path" in notes[0]
    shown, notes = display_name("C:\\line\\cam1\\x\x07.png")
    assert shown == "x.png" and notes
    assert display_name(None)[0] == "(unnamed)"


def test_the_store_only_accepts_generated_keys(tmp_path: Path) -> None:
    store = LocalImageStore(tmp_path / "kept")
    key = new_key("disc", "png")
    store.put(key, b"abc")
    assert store.get(key) == b"abc" and (tmp_path / "kept" / key).is_file()
    for bad in ("../escape.png", "/abs.png", "disc/../../x.png", "disc/.hidden"):
        with pytest.raises(ValueError):
            store.put(bad, b"x")
    assert not (tmp_path / "escape.png").exists()
    store.delete(key)
    assert not (tmp_path / "kept" / key).exists()


def _record(**kw) -> VerdictRecord:
    base = {"category": "disc", "model_name": "adkd-disc", "model_version": "1", "image_sha256": "a" * 64,
            "score": 1.5, "normalized_score": 0.7, "threshold": 1.2, "verdict": "anomalous", "latency_ms": 12.0,
            "source": "upload"}  # fmt: skip
    return VerdictRecord(**{**base, **kw})


def test_verdict_log_rows_feedback_and_counts(tmp_path: Path) -> None:
    log = VerdictLog(f"sqlite:///{tmp_path / 'station.db'}")
    first = log.add_verdict(_record())
    second = log.add_verdict(_record(verdict="normal", score=0.5, normalized_score=0.3, source="watch"))
    log.set_feedback(first, False, None)
    log.set_feedback(first, True, "scratch")  # a later word replaces the earlier one
    row = log.verdict(first)
    assert row["correct"] is True and row["defect_type"] == "scratch" and row["verdict"] == "anomalous"
    assert [r["id"] for r in log.recent()] == [second, first]
    assert log.counts() == {"disc": {"verdicts": 2, "flagged": 1, "feedback": 1, "wrong": 0}}
    assert log.seen("disc", "a" * 64, "watch") and not log.seen("disc", "b" * 64, "watch")
    with pytest.raises(KeyError):
        log.set_feedback(999, True, None)
    log.record_model({"name": "adkd-disc", "version": "1", "category": "disc", "threshold": 1.2,
                      "normal_scores": [0.5, 0.6], "quantile": 0.99, "metrics": {"image_auroc": 0.9}})  # fmt: skip
    log.record_model({"name": "adkd-disc", "version": "1", "category": "disc", "threshold": 9.9})  # first one stays
    assert log.model("adkd-disc", "1")["normal_scores"] == [0.5, 0.6]
    assert log.model("adkd-disc", "1")["threshold"] == 1.2
    log.close()
    reopened = VerdictLog(f"sqlite:///{tmp_path / 'station.db'}")
    assert len(reopened.verdicts("disc")) == 2


def test_a_database_url_that_cannot_work_is_one_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="station database URL"):
        VerdictLog("nosuchdialect://x/y")
    with pytest.raises(DataError, match="no station database"):  # readers never create an empty one
        VerdictLog(f"sqlite:///{tmp_path / 'none' / 'station.db'}", create=False)
    assert not (tmp_path / "none").exists()


@pytest.mark.parametrize(
    ("verdict", "correct", "defect", "where"),
    [
        ("anomalous", False, None, "train/good"),  # a false alarm: a good part
        ("anomalous", True, "scratch", "test/scratch"),  # a confirmed defect
        ("anomalous", True, None, "test/defect"),
        ("normal", False, "dent", "test/dent"),  # a missed defect
        ("normal", True, None, None),  # a confirmed pass teaches nothing new
        ("normal", None, None, None),  # no feedback
    ],
)
def test_feedback_destinations(verdict: str, correct: bool | None, defect: str | None, where: str | None) -> None:
    assert destination({"verdict": verdict, "correct": correct, "defect_type": defect}) == where


def test_defect_types_must_be_folder_names() -> None:
    assert clean_defect_type("  Broken Large ") == "broken_large"
    assert clean_defect_type("") is None
    for bad in ("../x", "a/b", "x" * 60, "ünï"):
        with pytest.raises(DataError, match="folder name"):
            clean_defect_type(bad)


def test_model_specs() -> None:
    assert parse_spec("disc") == ModelSpec("disc", "production")
    assert parse_spec("disc@staging").reference == "models:/adkd-disc@staging"
    assert parse_spec("disc/3").reference == "models:/adkd-disc/3"
    with pytest.raises(ConfigError, match="CATEGORY@ALIAS"):
        parse_spec("../disc")


class _Registry:
    """A registry with one model of category disc under a name template's name (not adkd-disc)."""

    def __init__(self, metric_tags: dict[str, str] | None = None) -> None:
        self.model = SimpleNamespace(name="adkd-disc-line3", tags={"category": "disc", "managed_by": "adkd"})
        self.metric_tags = metric_tags or {}

    def get_registered_model(self, name: str):
        from mlflow.exceptions import MlflowException

        if name != self.model.name:
            raise MlflowException(f"RESOURCE_DOES_NOT_EXIST: {name}")
        return self.model

    def search_registered_models(self, filter_string: str):
        return [self.model] if "category = 'disc'" in filter_string else []

    def get_model_version(self, name: str, version: str):
        return SimpleNamespace(tags={"model": "stfpm", **self.metric_tags}, run_id="run-1")


def test_a_category_resolves_to_its_registered_model_whatever_the_name_template_made() -> None:
    """`adkd station disc` finds adkd-disc-line3 as `adkd registry promote disc` does; a registered name works too."""
    by_category, by_name = resolve_specs(_Registry(), [parse_spec("disc@staging"), parse_spec("adkd-disc-line3/2")])
    assert by_category.reference == "models:/adkd-disc-line3@staging" and by_category.category == "disc"
    assert by_name.reference == "models:/adkd-disc-line3/2" and by_name.category == "disc"
    with pytest.raises(ConfigError, match="no registered model or category 'cable'"):
        resolve_specs(_Registry(), [parse_spec("cable")])


def test_the_served_file_shows_its_own_test_metrics_before_the_registry_tags(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """runtime=auto may serve an int8 variant: its own numbers, not the fp32 run's metric.* tags."""
    import adkd.pipelines.predict.runtimes as runtimes
    import adkd.platform.registry.resolve as resolve

    meta = {"category": "disc", "metrics": {"test/image_auroc": 0.81, "test/aupro": 0.5}}
    predictor = SimpleNamespace(meta=meta, image_threshold=1.0)
    origin = {"name": "adkd-disc-line3", "version": "2"}
    monkeypatch.setattr(resolve, "resolve_onnx", lambda ref, uri, cache: (tmp_path / "m.onnx", origin))
    monkeypatch.setattr(runtimes, "open_predictor", lambda path, runtime: predictor)
    registry = _Registry({"metric.image_auroc": "0.93"})
    spec = ModelSpec("disc", name="adkd-disc-line3")
    served = load_model(spec, "sqlite:///x.db", tmp_path, client=registry)
    assert served.metrics == {"image_auroc": 0.81, "aupro": 0.5} and served.family == "stfpm"
    meta["metrics"] = {}  # a file without numbers of its own: the registry's
    assert load_model(spec, "sqlite:///x.db", tmp_path, client=registry).metrics == {"image_auroc": 0.93}


def test_a_non_loopback_bind_needs_a_long_token() -> None:
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.5")
    check_bind("127.0.0.1", None)
    with pytest.raises(ConfigError, match="ADKD_STATION_TOKEN"):
        check_bind("0.0.0.0", None)
    with pytest.raises(ConfigError, match="at least 16"):
        check_bind("0.0.0.0", "short")
    check_bind("0.0.0.0", "a-long-enough-token-1234")


def _call(gate: TokenGate, headers: list[tuple[bytes, bytes]], query: bytes = b"") -> tuple[int, dict]:
    sent: list[dict] = []

    async def app(scope, receive, send):
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    async def receive():
        return {"type": "http.request", "body": b""}

    async def send(message):
        sent.append(message)

    gate.app = app
    scope = {"type": "http", "method": "GET", "path": "/", "headers": headers, "query_string": query}
    asyncio.run(gate(scope, receive, send))
    return sent[0]["status"], dict(sent[0]["headers"])


def test_token_gate_answers_401_without_the_token() -> None:
    gate = TokenGate(None, "a-long-enough-token-1234")
    assert _call(gate, [])[0] == 401
    assert _call(gate, [(b"authorization", b"Bearer wrong-token-wrong-token")])[0] == 401
    assert _call(gate, [(b"authorization", b"Bearer a-long-enough-token-1234")])[0] == 200
    assert _call(gate, [(b"cookie", b"x=1; adkd_station=a-long-enough-token-1234")])[0] == 200
    status, headers = _call(gate, [], b"token=a-long-enough-token-1234&category=disc")
    assert status == 303 and headers[b"location"] == b"/?category=disc"
    assert b"HttpOnly" in headers[b"set-cookie"]


def test_passed_parts_are_kept_as_a_deterministic_sample_and_flagged_ones_always(tmp_path: Path) -> None:
    import hashlib

    from adkd.platform.station.inspector import Station

    log = VerdictLog(f"sqlite:///{tmp_path / 'station.db'}")
    station = Station([], log, LocalImageStore(tmp_path), tracking_uri="", cache_dir=tmp_path, keep_passed=0.25)
    hashes = [hashlib.sha256(str(i).encode()).hexdigest() for i in range(2000)]
    kept = [station._keep(False, h) for h in hashes]
    assert 0.22 < sum(kept) / len(kept) < 0.28
    assert kept == [station._keep(False, h) for h in hashes]  # the same file: the same decision
    assert all(station._keep(True, h) for h in hashes[:50])
    station.keep_passed = 0.0
    assert not any(station._keep(False, h) for h in hashes)
    with pytest.raises(DataError, match="not served by this station"):
        station.inspect("disc", _png(8, 8), "a.png", "upload")
    log.close()
