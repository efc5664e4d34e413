"""Confirmed operator feedback into a new data version (``adkd data import feedback CATEGORY OUT``).

False alarms (flagged, marked wrong) join ``train/good``; confirmed defects (flagged and marked right, or
passed and marked wrong) join ``test/<defect type>`` (``defect`` when the operator gave none), without masks.
With ``--base`` the category the model was trained on is copied first, so the result is a full data version.
The folder is built under a temporary name, passed through the data gate and only then renamed into place;
a refused or failed import leaves nothing behind. Files are named ``feedback-<verdict id>.<ext>``.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from adkd.errors import DataError
from adkd.platform.station.images import ImageStore
from adkd.platform.station.log import VerdictLog

UNTYPED_DEFECT = "defect"


@dataclass
class FeedbackImport:
    """What an import wrote and what to run next."""

    category_dir: Path
    added: Counter = field(default_factory=Counter)  # "train/good", "test/<type>" -> files
    skipped: Counter = field(default_factory=Counter)  # reason -> verdicts
    base: Path | None = None
    image_level: bool = False
    train_command: str = ""
    notes: list[str] = field(default_factory=list)


def destination(row: dict[str, Any]) -> str | None:
    """Where a verdict with feedback goes: ``train/good``, ``test/<type>`` or None (a confirmed pass)."""
    if row.get("correct") is None:
        return None
    flagged = row["verdict"] == "anomalous"
    if flagged and not row["correct"]:
        return "train/good"
    if flagged or not row["correct"]:
        return f"test/{row.get('defect_type') or UNTYPED_DEFECT}"
    return None


def _link_or_copy(src: str, dst: str) -> None:
    try:
        os.link(src, dst)  # the base version's files are read-only inputs: share them where the disk allows
    except OSError:
        shutil.copy2(src, dst)


def import_feedback(
    log: VerdictLog,
    store: ImageStore,
    category: str,
    out_root: Path,
    *,
    base: Path | None = None,
    force: bool = False,
    validation_dir: Path | None = None,
) -> FeedbackImport:
    """Build ``out_root/<category>`` from ``category``'s confirmed feedback (and ``base``), gate it, rename it in."""
    from adkd.pipelines.data.validate import validate_data

    out_root = Path(out_root).expanduser()
    target = out_root / category
    if target.exists() and not force:
        raise DataError(f"{target} exists; pick another OUT or pass --force to replace it")
    if base is not None and not (Path(base) / category / "train" / "good").is_dir():
        raise DataError(f"--base {base} has no {category}/train/good; pass the data root the model was trained on")
    rows = [r for r in log.verdicts(category) if r.get("correct") is not None]
    result = FeedbackImport(category_dir=target, base=Path(base) if base is not None else None)
    picked = []
    for row in rows:
        where = destination(row)
        if where is None:
            result.skipped["confirmed pass (nothing to learn)"] += 1
        elif not row.get("image_key"):
            result.skipped["image not kept"] += 1
        else:
            picked.append((row, where))
    if not picked:
        raise DataError(
            f"no confirmed feedback with a kept image for category {category!r} in the station database; "
            "mark verdicts right or wrong on the station page first"
        )
    out_root.mkdir(parents=True, exist_ok=True)
    staging_root = out_root / f".feedback-{category}-{uuid.uuid4().hex[:8]}"
    staging = staging_root / category
    try:
        if base is not None:
            shutil.copytree(Path(base) / category, staging, copy_function=_link_or_copy)
        for row, where in picked:
            folder = staging / where
            folder.mkdir(parents=True, exist_ok=True)
            ext = str(row["image_key"]).rsplit(".", 1)[-1]
            (folder / f"feedback-{row['id']}.{ext}").write_bytes(store.get(row["image_key"]))
            result.added[where] += 1
        defects = sum(n for where, n in result.added.items() if where.startswith("test/"))
        if defects and (staging / "ground_truth").is_dir():
            result.image_level = True
            result.notes.append(
                f"{defects} confirmed defect(s) have no mask: the new version is checked and trained image-level "
                f"(pixel metrics absent); draw masks into {category}/ground_truth/<type>/ to keep them"
            )
        report = validate_data(
            staging_root, [category], validation_dir, image_level=result.image_level, data_docs=False
        )
        if not report.success:
            hint = "" if base is not None else " (pass --base DATA to start from the data the model was trained on)"
            # Name the files where they would have landed: the staging folder is removed on the way out.
            reason = report.failure_message().replace(str(staging_root), str(out_root))
            raise DataError(f"the new data version {target} fails the data gate: {reason}{hint}")
        if target.exists():
            shutil.rmtree(target)
        staging.rename(target)
    finally:
        shutil.rmtree(staging_root, ignore_errors=True)
    return result


def train_command(category: str, out_root: Path, family: str, preset: str, image_level: bool) -> str:
    """The ``adkd train`` command that makes a challenger from the new data version."""
    parts = ["adkd train", f"--category {category}", f"--data {out_root}", f"--model {family or 'mrkd'}"]
    if preset:
        parts.append(f"--preset {preset}")
    if image_level:
        parts.append("--image-level")
    return " ".join(parts)
