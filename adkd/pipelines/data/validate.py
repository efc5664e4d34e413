"""The data gate: a Great Expectations suite over the per-file and per-category fact tables.

``validate_data`` never raises for bad data (only for a root that is not a data root); it returns a
``ValidationReport`` and writes the GX validation results (JSON), Data Docs (HTML) and the fact
tables under ``out_dir``. ``require_valid`` raises ``DataError`` listing the failed rules.

Policy for unusual images: RGBA and 16-bit images are refused by rule (image modes must be 8-bit
``L`` or ``RGB``; masks ``L`` or ``1``). The reader can still convert them (alpha dropped, 16 bit
scaled to 8) when a user skips validation.

A refused rule says how many files fail, shows at most ``SHOWN_OFFENDERS`` of them and names the one
switch that accepts the case (``ACCEPT``), when there is one; skipping the whole gate comes last.

Mixed modes: an RGB file whose three channels are equal counts as ``L``. The reader turns every image into
RGB by repeating an ``L`` image's channel, so such a file gives the model exactly the pixels its ``L``
twin would (tests/unit/data/test_gate_messages.py); among colour RGB images it is a grey photo (CIFAR-10 has
some). Colour RGB among grayscale images, or L files among colour ones, are refused (``--allow-mixed-modes``).
"""

from __future__ import annotations

import html
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from adkd.errors import DataError
from adkd.pipelines.data.facts import category_facts, file_facts
from adkd.pipelines.data.gx_checks import Rule, run_checks
from adkd.pipelines.data.mvtec import check_root, resolve_categories

IMAGE_MODES = ("L", "RGB")
SHOWN_OFFENDERS = 10  # a failed rule shows at most this many files; the report files list them all
MASK_MODES = ("L", "1")
_IMAGE_LEVEL = "--image-level (setting data_gate.image_level=true): ground_truth/ is ignored, image metrics only"
# The one switch that accepts what a rule refuses; rules without one need the files fixed.
ACCEPT = {
    "one-mode": "--allow-mixed-modes (setting data_gate.allow_mixed_modes=true): every image is read as RGB",
    "one-size": "leave out --one-size (setting data_gate.one_size=false): the resize policy makes every size fit",
    "train-min-count": "a lower --min-train (setting data_gate.min_train)",
    **dict.fromkeys(
        ("defect-has-mask", "mask-size", "mask-binary", "mask-nonempty", "good-has-no-mask", "mask-has-image"),
        _IMAGE_LEVEL,
    ),
}
SKIP_TRAINING = "--skip-validation (setting skip_validation=true) trains without the gate"


@dataclass
class RuleOutcome:
    rule_id: str
    description: str
    table: str
    expectation: str
    success: bool
    checked: int
    unexpected: int
    offenders: list[str] = field(default_factory=list)  # every offender (the report files hold them all)
    summary: str = ""  # e.g. the folders most offenders are in
    accept: str = ""  # the switch that accepts what the rule refuses ("" when only fixing the files does)

    def lines(self, shown: int = SHOWN_OFFENDERS) -> list[str]:
        """The count, the summary, at most ``shown`` offenders and the switch that accepts them, one per line."""
        what = "files" if self.table == "files" else "categories"
        counted = f"{self.unexpected} of {self.checked} {what} fail"
        if self.expectation == "ExpectTableRowCountToBeBetween":  # a rule on the table's size, not on its rows
            counted = f"{self.checked} {what}"
        out = [f"{self.description} (rule {self.rule_id}): {counted}"]
        if self.summary:
            out.append(f"    {self.summary}")
        out += [f"    {o}" for o in self.offenders[:shown]]
        if len(self.offenders) > shown:
            out.append(f"    … and {len(self.offenders) - shown} more (all in the report files)")
        if not self.success:
            out.append(
                f"    to accept: {self.accept}" if self.accept else "    no switch accepts this: fix these files"
            )
        return out

    def line(self) -> str:
        return "\n".join(self.lines())


@dataclass
class ValidationReport:
    root: Path
    categories: list[str]
    success: bool
    outcomes: list[RuleOutcome]
    files: pd.DataFrame
    category_table: pd.DataFrame
    out_dir: Path | None = None
    artifacts: dict[str, str] = field(default_factory=dict)
    gx_remembered: bool = False  # GX's results for these very facts and rules, read back (gx_checks)

    @property
    def failed(self) -> list[RuleOutcome]:
        return [o for o in self.outcomes if not o.success]

    def to_dict(self) -> dict[str, Any]:
        return {
            "root": str(self.root),
            "categories": self.categories,
            "success": self.success,
            "n_files": len(self.files),
            "expectations": [vars(o) | {"offenders": list(o.offenders)} for o in self.outcomes],
            "failed": [o.rule_id for o in self.failed],
            "category_facts": self.category_table.to_dict(orient="records"),
            "artifacts": self.artifacts,
            "gx_results": "remembered" if self.gx_remembered else "run",
        }

    def failure_message(self, skip: str | None = None) -> str:
        """Every failed rule (count, files, the switch that accepts it); ``skip``, how to skip the gate, last."""
        lines = [
            f"data validation failed for {self.root} ({len(self.failed)} of {len(self.outcomes)} "
            "expectations): fix the files listed below or accept them with the switch named"
        ]
        for o in self.failed:
            first, *rest = o.lines()
            lines += [f"  - {first}", *rest]
        if self.out_dir is not None:
            lines.append(f"  full lists: {self.out_dir / 'validation_report.json'} and file_facts.csv")
        if skip:
            lines.append(f"  or skip every rule: {skip}")
        return "\n".join(lines)

    def size_lines(self) -> list[str]:
        """One line per category: its image sizes (count, range, most common)."""
        return [f"{r['category']}: {r['size_summary']}" for r in self.category_table.to_dict(orient="records")]


def _rules(min_train: int, one_size: bool, allow_mixed_modes: bool) -> list[Rule]:
    img = 'kind == "image"'
    defective = f'{img} and split == "test" and label == 1'
    with_mask = f"{defective} and mask_exists == True"
    # A category without ground_truth/ is image-level: its defective images need no mask. One with
    # ground_truth/ needs a mask for every defective image.
    rules = [
        Rule("files-present", "the data set holds files", "files", "ExpectTableRowCountToBeBetween", {"min_value": 1}),
        Rule(
            "no-unexpected-files",
            "only images in train/ and test/ folders and masks in ground_truth/ folders",
            "files",
            "ExpectColumnValuesToBeInSet",
            {"column": "kind", "value_set": ["image", "mask"]},
            "{error}",
        ),
        Rule(
            "decodable",
            "every image and mask decodes",
            "files",
            "ExpectColumnValuesToBeInSet",
            {"column": "decodable", "value_set": [True], "row_condition": 'kind != "unexpected"'},
            "{error}",
        ),
        Rule(
            "image-mode",
            f"images are 8-bit {' or '.join(IMAGE_MODES)} (convert RGBA and 16-bit images)",
            "files",
            "ExpectColumnValuesToBeInSet",
            {"column": "mode", "value_set": list(IMAGE_MODES), "row_condition": f"{img} and decodable == True"},
            "mode {mode}",
        ),
        Rule(
            "mask-mode",
            f"masks are 8-bit {' or '.join(MASK_MODES)}",
            "files",
            "ExpectColumnValuesToBeInSet",
            {"column": "mode", "value_set": list(MASK_MODES), "row_condition": 'kind == "mask" and decodable == True'},
            "mode {mode}",
        ),
        Rule(
            "train-only-good",
            "train/ holds only a good/ folder",
            "files",
            "ExpectColumnValuesToBeInSet",
            {"column": "defect", "value_set": ["good"], "row_condition": f'{img} and split == "train"'},
            "in train/{defect}/",
        ),
        Rule(
            "defect-has-mask",
            "every defective test image has a mask in ground_truth/<defect>/",
            "files",
            "ExpectColumnValuesToBeInSet",
            {"column": "mask_exists", "value_set": [True], "row_condition": f"{defective} and image_level == False"},
            "missing {mask_path}",
        ),
        Rule(
            "mask-size",
            "each mask has its image's size",
            "files",
            "ExpectColumnPairValuesToBeEqual",
            {
                "column_A": "size",
                "column_B": "mask_size",
                "row_condition": f'{with_mask} and decodable == True and mask_size != ""',
            },
            "mask {mask_path} is {mask_size}, the image {size}",
        ),
        Rule(
            "mask-binary",
            "mask values are {0, 255} or {0, 1}",
            "files",
            "ExpectColumnValuesToBeInSet",
            {"column": "mask_values_ok", "value_set": [True], "row_condition": with_mask},
            "mask {mask_path} has values {mask_values}",
        ),
        Rule(
            "mask-nonempty",
            "each mask marks at least one defect pixel",
            "files",
            "ExpectColumnValuesToBeInSet",
            {"column": "mask_nonempty", "value_set": [True], "row_condition": with_mask},
            "mask {mask_path} is all zero",
        ),
        Rule(
            "good-has-no-mask",
            "good test images have no mask",
            "files",
            "ExpectColumnValuesToBeInSet",
            {
                "column": "mask_exists",
                "value_set": [False],
                "row_condition": f'{img} and split == "test" and label == 0',
            },
            "has mask {mask_path}",
        ),
        Rule(
            "mask-has-image",
            "every mask belongs to a test image (test/<defect>/<stem>.png)",
            "files",
            "ExpectColumnValuesToBeInSet",
            {"column": "has_image", "value_set": [True], "row_condition": 'kind == "mask"'},
        ),
        Rule(
            "no-train-test-duplicates",
            "no image is in both train and test (same pixels)",
            "files",
            "ExpectColumnValuesToBeInSet",
            {"column": "in_train_and_test", "value_set": [False], "row_condition": img},
        ),
        Rule(
            "train-min-count",
            f"train/good holds at least {min_train} image(s)",
            "categories",
            "ExpectColumnValuesToBeBetween",
            {"column": "n_train_good", "min_value": min_train},
            "{n_train_good} images",
        ),
        Rule(
            "test-has-good",
            "test/good holds at least one image",
            "categories",
            "ExpectColumnValuesToBeBetween",
            {"column": "n_test_good", "min_value": 1},
            "{n_test_good} images",
        ),
        Rule(
            "test-has-defects",
            "test/ holds at least one defective image",
            "categories",
            "ExpectColumnValuesToBeBetween",
            {"column": "n_test_defective", "min_value": 1},
            "{n_test_defective} images",
        ),
    ]
    decoded = f"{img} and decodable == True"
    if one_size:
        rules.append(
            Rule(
                "one-size",
                "one image size per category (asked for by one_size)",
                "files",
                "ExpectColumnValuesToBeInSet",
                {"column": "odd_size", "value_set": [False], "row_condition": decoded},
                "{size}; the most common size in {category} is {category_size}",
            )
        )
    if not allow_mixed_modes:
        rules.append(
            Rule(
                "one-mode",
                "one image mode per category (RGB with three equal channels counts as L)",
                "files",
                "ExpectColumnValuesToBeInSet",
                {"column": "odd_mode", "value_set": [False], "row_condition": decoded},
                "mode {mode}; the most common mode in {category} is {category_mode}",
            )
        )
    return rules


def _folder_summary(rows: pd.DataFrame) -> str:
    """Where a rule's offending files are: the 5 folders holding most of them."""
    if rows.empty:
        return ""
    folders = (rows.category + "/" + rows.split + "/" + rows.defect.where(rows.defect != "", "?")).value_counts()
    top = ", ".join(f"{name} ({n})" for name, n in folders.head(5).items())
    more = f", +{len(folders) - 5} more folders" if len(folders) > 5 else ""
    return f"in {top}{more}"


def _outcomes(results: dict[str, Any], rules: list[Rule], tables: dict[str, pd.DataFrame]) -> list[RuleOutcome]:
    by_id = {rule.rule_id: rule for rule in rules}
    outcomes = []
    for table, result in results.items():
        key = "path" if table == "files" else "category"
        indexed = tables[table].set_index(key, drop=False)
        for res in result["results"]:
            rule = by_id[res["expectation_config"]["meta"]["rule_id"]]
            info = res.get("result") or {}
            offenders, names = [], []
            for entry in info.get("unexpected_index_list") or []:
                name = str(entry[key]) if isinstance(entry, dict) else str(entry)
                names.append(name)
                detail = ""
                if rule.detail and name in indexed.index:
                    detail = rule.detail.format_map(indexed.loc[name].to_dict())
                offenders.append(f"{name} ({detail})" if detail else name)
            if not res["success"] and not offenders and rule.expectation == "ExpectTableRowCountToBeBetween":
                offenders.append("no image, mask or other file under the category folders")
            summary = ""
            if table == "files" and names and len(names) > SHOWN_OFFENDERS:
                summary = _folder_summary(indexed.loc[[n for n in names if n in indexed.index]])
            unexpected = int(info.get("unexpected_count") or (0 if res["success"] else 1))
            checked = int(info.get("element_count") or info.get("observed_value") or 0)
            accept = ACCEPT.get(rule.rule_id, "")
            if rule.rule_id == "train-min-count" and rule.kwargs["min_value"] <= 1:
                accept = ""  # --min-train is at its floor (1): only images in train/good help
            outcomes.append(
                RuleOutcome(
                    rule.rule_id,
                    rule.description,
                    table,
                    rule.expectation,
                    bool(res["success"]),
                    checked,
                    unexpected,
                    offenders,
                    summary,
                    accept,
                )
            )
    order = {rule.rule_id: i for i, rule in enumerate(rules)}
    return sorted(outcomes, key=lambda o: order[o.rule_id])


def _html_report(report: ValidationReport) -> str:
    rows = "".join(
        f"<tr class={'pass' if o.success else 'fail'}><td>{'PASS' if o.success else 'FAIL'}</td>"
        f"<td>{html.escape(o.description)}</td><td>{o.table}</td><td>{o.expectation}</td>"
        f"<td>{o.checked}</td><td>{o.unexpected}</td><td>{html.escape(o.summary)}<br>"
        f"{'<br>'.join(html.escape(x) for x in o.offenders)}"
        f"{'<br>to accept: ' + html.escape(o.accept) if o.accept and not o.success else ''}</td></tr>"
        for o in report.outcomes
    )
    status = "passed" if report.success else "FAILED"
    return (
        "<!doctype html><meta charset=utf-8><title>adkd data validation</title>"
        "<style>body{font-family:sans-serif}td,th{border:1px solid #ccc;padding:4px}"
        ".fail{background:#fdd}.pass{background:#dfd}</style>"
        f"<h1>Data validation {status}</h1><p>{html.escape(str(report.root))}: "
        f"{html.escape(', '.join(report.categories))}, {len(report.files)} files</p>"
        "<table><tr><th>result</th><th>rule</th><th>table</th><th>expectation</th><th>checked</th>"
        f"<th>unexpected</th><th>offending files</th></tr>{rows}</table>"
        f"{report.category_table.to_html(index=False)}"
    )


def _write_outputs(report: ValidationReport, results: dict[str, Any], out_dir: Path) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    gx_json = out_dir / "gx_validation_result.json"
    gx_json.write_text(json.dumps(results, indent=1, default=str))
    report.files.to_csv(out_dir / "file_facts.csv", index=False)
    report.category_table.to_csv(out_dir / "category_facts.csv", index=False)
    (out_dir / "report.html").write_text(_html_report(report))
    report.artifacts = {
        "gx_validation_result": str(gx_json),
        "report_html": str(out_dir / "report.html"),
        "file_facts": str(out_dir / "file_facts.csv"),
        "category_facts": str(out_dir / "category_facts.csv"),
        "report_json": str(out_dir / "validation_report.json"),
    }
    if (out_dir / "data_docs" / "index.html").is_file():
        report.artifacts["data_docs"] = str(out_dir / "data_docs" / "index.html")
    (out_dir / "validation_report.json").write_text(json.dumps(report.to_dict(), indent=1, default=str))


def validate_data(
    root: str | Path,
    categories: list[str] | None = None,
    out_dir: str | Path | None = None,
    *,
    min_train: int = 1,
    one_size: bool = False,
    allow_mixed_modes: bool = False,
    image_level: bool = False,
    data_docs: bool = True,
) -> ValidationReport:
    """Check ``categories`` (all when None) under ``root``; raises DataError only if root is unusable.

    Options are those of ``GateOptions``. With ``out_dir``, writes the GX results, fact tables, an HTML
    summary and (``data_docs``) GX Data Docs.
    """
    root_path = check_root(root)
    names = resolve_categories(root_path, categories)
    files = file_facts(root_path, names, image_level)
    cats = category_facts(root_path, names, files, image_level)
    tables = {"files": files, "categories": cats}
    rules = _rules(min_train, one_size, allow_mixed_modes)
    # Absolute: GX's Data Docs store refuses a relative folder (the CLI's default --out is relative).
    out = Path(out_dir).expanduser().resolve() if out_dir is not None else None
    docs = out / "data_docs" if out is not None and data_docs else None
    results, remembered = run_checks(tables, rules, docs, root=root_path)
    outcomes = _outcomes(results, rules, tables)
    report = ValidationReport(
        root=root_path,
        categories=names,
        success=all(o.success for o in outcomes),
        outcomes=outcomes,
        files=files,
        category_table=cats,
        out_dir=out,
        gx_remembered=remembered,
    )
    if out is not None:
        _write_outputs(report, results, out)
    return report


def require_valid(
    root: str | Path, categories: list[str] | None = None, out_dir: str | Path | None = None, **options: Any
) -> ValidationReport:
    """Validate and raise DataError listing the failed rules and first offending files."""
    report = validate_data(root, categories, out_dir, **options)
    if not report.success:
        raise DataError(report.failure_message(skip=SKIP_TRAINING))
    return report
