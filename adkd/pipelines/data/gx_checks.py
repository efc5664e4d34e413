"""The data gate's Great Expectations run: one suite per fact table through a GX checkpoint, remembered.

GX evaluates expectations over the fact tables that ``facts`` builds from the files, a pure function of
those tables and the rules. Its results are kept under ``<cache>/data-gate/`` by a digest of both (and the
GX and adkd versions), so a category whose files have not changed (every content hash, size, mode and mask
is in the tables; paths count relative to the data root) gets the same results back without importing GX
again, which alone costs about 3 s of every training start (a Ray worker per category, a tuning trial, a
benchmark row). The facts are always computed afresh; a changed file changes the digest.
``ADKD_GATE_MEMO=off`` turns the memory off; ``ADKD_GATE_MEMO=/a/folder`` keeps it there instead.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from adkd.settings import gate_memo_dir


@dataclass(frozen=True)
class Rule:
    """One expectation: which table, its GX class and kwargs, and how to describe an offender."""

    rule_id: str
    description: str
    table: str  # files | categories
    expectation: str
    kwargs: dict[str, Any]
    detail: str = ""  # shown next to each offending file; formatted with the file's row


INDEX_COLUMNS = {"files": ["path"], "categories": ["category"]}


ROOT_TOKEN = "{adkd-data-root}/"  # stands for the data root in a remembered result
PATH_COLUMNS = ("path", "mask_path")


def _relative(tables: dict[str, pd.DataFrame], prefix: str) -> dict[str, pd.DataFrame]:
    """The tables with the data root cut from their path columns: the same files elsewhere are the same facts."""
    out = {}
    for name, table in tables.items():
        table = table.copy()
        for column in PATH_COLUMNS:
            if column in table:
                table[column] = table[column].map(
                    lambda v: v[len(prefix) :] if isinstance(v, str) and v.startswith(prefix) else v
                )
        out[name] = table
    return out


def _digest(tables: dict[str, pd.DataFrame], rules: list[Rule]) -> str:
    from importlib.metadata import version

    h = hashlib.sha256()
    h.update(f"gx {version('great_expectations')} adkd {version('adkd')}\n".encode())
    h.update(json.dumps([vars(r) for r in rules], sort_keys=True, default=str).encode())
    for name in sorted(tables):
        h.update(f"\n{name}\n".encode())
        h.update(tables[name].to_csv(index=False).encode())
    return h.hexdigest()


def run_checks(
    tables: dict[str, pd.DataFrame], rules: list[Rule], docs_dir: Path | None = None, root: Path | None = None
) -> tuple[dict[str, dict[str, Any]], bool]:
    """GX's validation results by table (as GX's JSON dicts), and whether they were remembered ones.

    ``root``: the data root the tables' paths start with; the memory holds them relative to it, so a copy of
    the same files under another root (a Ray node's synced cache, a moved folder) is remembered too, and a
    remembered result names the files under this root. With ``docs_dir`` GX always runs (it renders Data Docs).
    """
    memo = gate_memo_dir()
    prefix = f"{root}/" if root is not None else ""
    escaped = json.dumps(prefix)[1:-1]  # the prefix as it is written inside a JSON string
    path = memo / f"{_digest(_relative(tables, prefix) if prefix else tables, rules)}.json" if memo else None
    if path is not None and docs_dir is None and path.is_file():
        try:
            text = path.read_text()
            return json.loads(text.replace(ROOT_TOKEN, escaped) if prefix else text), True
        except (OSError, ValueError):
            pass  # unreadable (a disk problem, a foreign file): run GX and write it again
    results = _run_gx(tables, rules, docs_dir)
    if path is not None:
        text = json.dumps(results, default=str)
        _write_atomic(path, text.replace(escaped, ROOT_TOKEN) if prefix else text)
    return results, False


def _write_atomic(path: Path, text: str) -> None:
    """Readers see the whole file or none (workers validating at once write the same file)."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".json")
        with os.fdopen(fd, "w") as out:
            out.write(text)
        os.replace(tmp, path)
    except OSError:
        pass  # a read-only or full cache only costs the next run a GX import


def _quiet_gx() -> None:
    for name in ("great_expectations", "great_expectations.core", "great_expectations.data_context"):
        logging.getLogger(name).setLevel(logging.ERROR)


def _run_gx(tables: dict[str, pd.DataFrame], rules: list[Rule], docs_dir: Path | None) -> dict[str, dict[str, Any]]:
    """Run one suite per table through a GX checkpoint; return the validation results by table."""
    import great_expectations as gx
    import great_expectations.expectations as gxe
    from great_expectations.data_context.types.base import ProgressBarsConfig

    _quiet_gx()
    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    source = context.data_sources.add_pandas("adkd-facts")
    definitions = []
    for table in tables:
        batch = source.add_dataframe_asset(table).add_batch_definition_whole_dataframe(f"{table}-all")
        suite = context.suites.add(gx.ExpectationSuite(name=f"adkd-{table}"))
        for rule in rules:
            if rule.table != table:
                continue
            kwargs = dict(rule.kwargs)
            if "row_condition" in kwargs:
                kwargs["condition_parser"] = "pandas"
            meta = {"rule_id": rule.rule_id, "description": rule.description}
            suite.add_expectation(getattr(gxe, rule.expectation)(**kwargs, meta=meta))
        definitions.append(
            context.validation_definitions.add(gx.ValidationDefinition(name=table, data=batch, suite=suite))
        )
    actions = []
    if docs_dir is not None:
        site = {
            "class_name": "SiteBuilder",
            "store_backend": {"class_name": "TupleFilesystemStoreBackend", "base_directory": str(docs_dir)},
            "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
        }
        context.add_data_docs_site(site_name="adkd", site_config=site)
        actions.append(gx.checkpoint.UpdateDataDocsAction(name="data-docs", site_names=["adkd"]))
    results = {}
    for definition in definitions:
        table = definition.name
        checkpoint = context.checkpoints.add(
            gx.Checkpoint(
                name=f"adkd-{table}",
                validation_definitions=[definition],
                actions=actions,
                result_format={"result_format": "COMPLETE", "unexpected_index_column_names": INDEX_COLUMNS[table]},
            )
        )
        run = checkpoint.run(batch_parameters={"dataframe": tables[table]})
        # GX's own JSON form: what gx_validation_result.json holds and what a remembered result reads back.
        results[table] = json.loads(json.dumps(next(iter(run.run_results.values())).to_json_dict(), default=str))
    return results
