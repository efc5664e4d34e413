"""Which registered model a version goes to, and which one a user means.

A version is registered under the name the ``registered_model_name`` setting makes of it (default
``adkd-{category}``; the fields are ``{category}``, ``{model}``, ``{dataset}``, ``{backbone}``, ``{preset}``).
Commands take a registered name or a category: a category resolves to its one registered model, and a
category with several (say one per data set) asks the user to name one. adkd's models carry the tag
``managed_by=adkd`` and their ``category`` and ``dataset``, which is how they are found.
"""

from __future__ import annotations

import re
from typing import Any

from adkd.errors import ConfigError, ServiceError, first_line
from adkd.platform.tracking.labels import model_description
from adkd.settings import DEFAULT_MODEL_NAME, check_name_template

MANAGED_TAG = ("managed_by", "adkd")
DATASET_TAG = "dataset"
# MLflow accepts most characters in a model name, but '/', ':' and '@' break models:/name@alias URIs.
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def registered_name(
    category: str,
    *,
    model: str = "",
    dataset: str = "",
    backbone: str = "",
    preset: str = "",
    template: str = DEFAULT_MODEL_NAME,
) -> str:
    """The registered model of one category's versions under ``template`` (default ``adkd-<category>``)."""
    try:
        check_name_template(template)
    except ValueError as exc:
        raise ConfigError(f"registered_model_name: {exc}") from None
    fields = {"category": category, "model": model, "dataset": dataset, "backbone": backbone, "preset": preset}
    safe = {k: _UNSAFE.sub("-", str(v)).strip("-") for k, v in fields.items()}
    # An empty field leaves no doubled separator behind: adkd-{category}-{dataset} with no data set is adkd-<category>.
    name = re.sub(r"([-_.])[-_.]+", r"\1", template.format(**safe)).strip("-_.")
    return name or f"adkd-{safe['category']}"


def ensure_registered_model(client: Any, name: str, category: str, dataset: str = "") -> None:
    """Create ``name`` (tagged and described) unless it exists; a racing creator is not an error."""
    from mlflow.exceptions import MlflowException

    try:
        client.get_registered_model(name)
        return
    except MlflowException:
        pass
    tags = {"category": category, MANAGED_TAG[0]: MANAGED_TAG[1]}
    if dataset:
        tags[DATASET_TAG] = dataset
    try:
        client.create_registered_model(name, tags=tags, description=model_description(category))
    except MlflowException as exc:
        if "RESOURCE_ALREADY_EXISTS" not in str(exc) and "already exists" not in str(exc):
            raise


def dataset_mismatch(client: Any, name: str, dataset: str) -> str | None:
    """One line when ``name`` holds versions of another data set than ``dataset`` (else None); tags the data set
    on a model that has none yet."""
    if not dataset:
        return None
    model = client.get_registered_model(name)
    known = (model.tags or {}).get(DATASET_TAG)
    if not known:
        client.set_registered_model_tag(name, DATASET_TAG, dataset)
        return None
    if known == dataset:
        return None
    return (
        f"{name} holds versions of data set '{known}' and this one is of '{dataset}': promotion will re-score them "
        f'on one data set; to keep them apart set registered_model_name = "adkd-{{category}}-{{dataset}}" '
        "(adkd.toml or ADKD_REGISTERED_MODEL_NAME)"
    )


def _filter(**tags: str) -> str:
    parts = [f"tags.{MANAGED_TAG[0]} = '{MANAGED_TAG[1]}'"]
    parts += [f"tags.{k} = '{v.replace(chr(39), '')}'" for k, v in tags.items()]
    return " AND ".join(parts)


def adkd_models(client: Any, category: str | None = None) -> list[Any]:
    """adkd's registered models (of ``category`` only, when given), by name."""
    found = client.search_registered_models(filter_string=_filter(**({"category": category} if category else {})))
    return sorted(found, key=lambda m: m.name)


def resolve_model(client: Any, ref: str) -> Any:
    """The registered model ``ref`` names: a registered name, ``adkd-<ref>``, or the one model of category ``ref``."""
    from mlflow.exceptions import MlflowException

    for name in dict.fromkeys((ref, f"adkd-{ref}")):
        try:
            return client.get_registered_model(name)
        except MlflowException as exc:
            if "RESOURCE_DOES_NOT_EXIST" not in str(exc) and "not found" not in str(exc).lower():
                raise ServiceError(f"MLflow registry error for '{name}': {first_line(exc)}") from None
    models = adkd_models(client, ref)
    if len(models) == 1:
        return models[0]
    if models:
        names = ", ".join(m.name for m in models)
        raise ConfigError(f"category '{ref}' has {len(models)} registered models ({names}); name one of them")
    raise ConfigError(
        f"no registered model or category '{ref}'; train that category first (adkd train) or check `adkd registry list`"
    )
