"""The data gate remembers GX's results for the very facts and rules it checked: the same category again gives
the same outcomes without running GX; a changed file, or ADKD_GATE_MEMO=off, runs GX."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from adkd.errors import ConfigError
from adkd.pipelines.data import gx_checks
from adkd.pipelines.data.validate import validate_data
from adkd.settings import GATE_MEMO_ENV, gate_memo_dir


@pytest.fixture
def memo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("ADKD_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv(GATE_MEMO_ENV, raising=False)
    return tmp_path / "cache" / "data-gate"


def _outcomes(report) -> list[dict]:
    return [vars(o) for o in report.outcomes]


def _no_gx(*_args, **_kwargs):
    raise AssertionError("GX ran although these facts and rules were checked before")


def test_the_same_facts_are_not_checked_twice(synth_copy: Path, memo: Path, monkeypatch) -> None:
    first = validate_data(synth_copy, ["weave"], data_docs=False)
    assert first.success and not first.gx_remembered
    assert len(list(memo.glob("*.json"))) == 1
    monkeypatch.setattr(gx_checks, "_run_gx", _no_gx)
    again = validate_data(synth_copy, ["weave"], data_docs=False)
    assert again.gx_remembered and again.to_dict()["gx_results"] == "remembered"
    assert _outcomes(again) == _outcomes(first) and again.success


def test_a_changed_file_is_checked_again_and_refused(synth_copy: Path, memo: Path) -> None:
    assert validate_data(synth_copy, ["weave"], data_docs=False).success
    next(iter(sorted((synth_copy / "weave" / "ground_truth").rglob("*.png")))).unlink()
    broken = validate_data(synth_copy, ["weave"], data_docs=False)
    assert not broken.gx_remembered and not broken.success
    assert [o.rule_id for o in broken.failed] == ["defect-has-mask"]
    assert len(list(memo.glob("*.json"))) == 2
    # The refusal is remembered as a refusal.
    again = validate_data(synth_copy, ["weave"], data_docs=False)
    assert again.gx_remembered and _outcomes(again) == _outcomes(broken)


def test_other_rules_are_other_checks(synth_copy: Path, memo: Path) -> None:
    validate_data(synth_copy, ["weave"], data_docs=False)
    other = validate_data(synth_copy, ["weave"], data_docs=False, one_size=True)
    assert not other.gx_remembered


def test_memo_off_always_runs_gx(synth_copy: Path, memo: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(GATE_MEMO_ENV, "off")
    validate_data(synth_copy, ["weave"], data_docs=False)
    assert not validate_data(synth_copy, ["weave"], data_docs=False).gx_remembered
    assert not memo.exists()


def test_an_unreadable_memo_file_is_checked_again(synth_copy: Path, memo: Path) -> None:
    validate_data(synth_copy, ["weave"], data_docs=False)
    (path,) = memo.glob("*.json")
    path.write_text("{not json")
    report = validate_data(synth_copy, ["weave"], data_docs=False)
    assert not report.gx_remembered and report.success


def test_the_same_files_under_another_root_are_remembered_and_named_there(
    synth_copy: Path, memo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    next(iter(sorted((synth_copy / "weave" / "ground_truth").rglob("*.png")))).unlink()
    first = validate_data(synth_copy, ["weave"], data_docs=False)
    moved = tmp_path / "elsewhere" / "data"
    shutil.copytree(synth_copy, moved)
    monkeypatch.setattr(gx_checks, "_run_gx", _no_gx)
    again = validate_data(moved, ["weave"], data_docs=False)
    assert again.gx_remembered and [o.rule_id for o in again.failed] == ["defect-has-mask"]
    (offender,) = again.failed[0].offenders
    before = first.failed[0].offenders[0]
    assert offender.startswith(str(moved)) and str(synth_copy) not in offender
    assert offender.replace(str(moved), "ROOT") == before.replace(str(synth_copy), "ROOT")


def test_a_memo_folder_is_shared_by_caches_of_their_own(
    synth_copy: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    shared = tmp_path / "shared-memo"
    monkeypatch.setenv(GATE_MEMO_ENV, str(shared))
    monkeypatch.setenv("ADKD_CACHE_DIR", str(tmp_path / "node-a"))
    first = validate_data(synth_copy, ["weave"], data_docs=False)
    assert not first.gx_remembered and len(list(shared.glob("*.json"))) == 1
    monkeypatch.setenv("ADKD_CACHE_DIR", str(tmp_path / "node-b"))
    monkeypatch.setattr(gx_checks, "_run_gx", _no_gx)
    again = validate_data(synth_copy, ["weave"], data_docs=False)
    assert again.gx_remembered and _outcomes(again) == _outcomes(first)
    assert not (tmp_path / "node-a" / "data-gate").exists() and not (tmp_path / "node-b" / "data-gate").exists()


@pytest.mark.parametrize("value", ["on", "", "yes"])
def test_on_keeps_the_memory_in_the_cache(value: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ADKD_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv(GATE_MEMO_ENV, value)
    assert gate_memo_dir() == tmp_path / "cache" / "data-gate"


def test_a_relative_memo_folder_is_refused_naming_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(GATE_MEMO_ENV, "memo")
    with pytest.raises(ConfigError, match=f"{GATE_MEMO_ENV}='memo'.*absolute folder"):
        gate_memo_dir()
