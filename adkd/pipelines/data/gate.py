"""The data gate's options, shared by `adkd data validate` and the training gate (TrainConfig.data_gate)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class GateOptions(BaseModel):
    """Which rules the data gate applies beyond the fixed ones.

    Varying image sizes are accepted and reported unless ``one_size``; a ``resize`` policy turns any
    size into the model's square input. ``image_level`` ignores ground_truth/ (image metrics only).
    """

    model_config = ConfigDict(extra="forbid")

    one_size: bool = Field(False, description="Refuse a category whose images have more than one size.")
    allow_mixed_modes: bool = Field(False, description="Accept L and RGB images in one category.")
    min_train: int = Field(1, ge=1, description="Fewest images train/good may hold.")
    image_level: bool = Field(False, description="Declare the categories image-level: masks are not used.")

    def validate_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of ``validate_data``."""
        return self.model_dump()

    def overrides(self) -> list[str]:
        """``--set`` overrides for the options that differ from the defaults (how the CLI passes them on)."""
        defaults = GateOptions()
        return [
            f"data_gate.{k}={str(v).lower() if isinstance(v, bool) else v}"
            for k, v in self.model_dump().items()
            if getattr(defaults, k) != v
        ]
