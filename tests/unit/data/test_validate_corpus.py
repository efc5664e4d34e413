"""Every bad input gets a failed rule naming the file, and never a traceback."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from adkd.errors import DataError
from adkd.pipelines.data import dataset
from adkd.pipelines.data.validate import ValidationReport, require_valid, validate_data

from .corpus import CASES, Case, build_corpus


@pytest.fixture(scope="module")
def corpus(synth_base: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_corpus(synth_base / "weave", tmp_path_factory.mktemp("corpus") / "data")


@pytest.fixture(scope="module")
def report(corpus: Path, tmp_path_factory: pytest.TempPathFactory) -> ValidationReport:
    return validate_data(corpus, out_dir=tmp_path_factory.mktemp("corpus-out"))


def _expected_name(corpus: Path, case: Case) -> str:
    return str(corpus / case.name / case.file) if case.file else case.name


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_case_fails_its_rule_naming_the_file(case: Case, corpus: Path, report: ValidationReport) -> None:
    outcome = next(o for o in report.outcomes if o.rule_id == case.rule)
    assert not outcome.success
    name = _expected_name(corpus, case)
    hits = [o for o in outcome.offenders if o == name or o.startswith(f"{name} (")]
    assert len(hits) == 1, outcome.offenders
    assert case.reason in hits[0]


def test_clean_category_and_nothing_else_fails(corpus: Path, report: ValidationReport) -> None:
    assert not report.success
    offenders = " ".join(o for out in report.outcomes for o in out.offenders)
    assert str(corpus / "clean") not in offenders and " clean" not in offenders
    expected = {c.rule for c in CASES} | {"one-mode"}  # RGBA and 16-bit also mix modes in their category
    assert {o.rule_id for o in report.failed} == expected
    one_mode = next(o for o in report.outcomes if o.rule_id == "one-mode")
    assert sorted(one_mode.offenders) == [
        f"{corpus / 'rgba/train/good/003.png'} (mode RGBA; the most common mode in rgba is RGB)",
        f"{corpus / 'sixteen_bit/train/good/004.png'} (mode I;16; the most common mode in sixteen_bit is RGB)",
    ]
    decodable = next(o for o in report.outcomes if o.rule_id == "decodable")
    assert decodable.unexpected == 5


def test_reports_are_written(report: ValidationReport) -> None:
    for key in ("gx_validation_result", "data_docs", "report_html", "file_facts", "report_json"):
        assert Path(report.artifacts[key]).is_file(), key
    html = Path(report.artifacts["report_html"]).read_text()
    assert "FAIL" in html and "symlink loop" in html
    assert '"success": false' in Path(report.artifacts["gx_validation_result"]).read_text()


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_reader_converts_or_raises_a_data_error_naming_the_file(case: Case, corpus: Path) -> None:
    dataset.clear_cache()
    if case.reader_error is None:
        data = dataset.load_category(corpus, case.name, image_size=32, val_fraction=0)
        assert data.train.shape[1:] == (3, 32, 32)
        return
    with pytest.raises(DataError) as info:
        dataset.load_category(corpus, case.name, image_size=32, val_fraction=0)
    assert case.reader_error in str(info.value)
    assert case.name in str(info.value)


def test_require_valid_raises_listing_failures(corpus: Path) -> None:
    with pytest.raises(DataError) as info:
        require_valid(corpus, ["clean", "truncated"])
    message = str(info.value)
    assert "(rule decodable)" in message and str(corpus / "truncated" / "train/good/000.png") in message
    assert "--skip-validation" in message
    assert require_valid(corpus, ["clean"]).success


def _run_cli(monkeypatch: pytest.MonkeyPatch, *args: str) -> int:
    from adkd.cli.main import run

    monkeypatch.setattr(sys, "argv", ["adkd", *args])
    with pytest.raises(SystemExit) as info:
        run()
    return info.value.code


def test_cli_exit_code_2_names_files_without_traceback(
    corpus: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    code = _run_cli(monkeypatch, "data", "validate", str(corpus), "-c", "clean,truncated,defect_no_mask",
                    "--out", str(tmp_path / "out"))  # fmt: skip
    captured = capsys.readouterr()
    assert code == 2
    assert "Traceback" not in captured.err + captured.out
    assert "data validation failed" in captured.err
    assert str(corpus / "truncated" / "train/good/000.png") in captured.err
    assert str(corpus / "defect_no_mask" / "test/scratch/000.png") in captured.err
    assert "FAIL" in captured.out and (tmp_path / "out" / "data_docs" / "index.html").is_file()


@pytest.mark.parametrize("kind", ["missing", "file"])
def test_bad_root_is_one_line(kind: str, tmp_path: Path, monkeypatch, capsys) -> None:
    root = tmp_path / "root"
    if kind == "file":
        root.write_text("x")
    with pytest.raises(DataError, match="does not exist" if kind == "missing" else "is a file"):
        validate_data(root)
    code = _run_cli(monkeypatch, "data", "validate", str(root), "--out", str(tmp_path / "out"))
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: data root") and str(root) in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
