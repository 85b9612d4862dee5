"""The ``data`` section of the pretraining config: which prepared genome, and how windows are cut and
tokenized from it. The data builders take this section whole (``stream.pretraining_dataset``)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from randommask.data.tokenizer import MAX_K, KmerTokenizer


class Section(BaseModel):
    """A config section: unknown keys are errors, so a typo cannot fall back to a default."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class DataSection(Section):
    prepared: str = Field(description="prepared dataset (randommask data prepare --out): local path or s3://")
    window_bp: int = Field(KmerTokenizer(6).bases_for(512), ge=8,
                           description="bases per window; 515 gives DNABERT's 512 positions for k=6")
    k: int = Field(6, ge=1, le=MAX_K)
    stride: int = Field(1, ge=1)
    rc_prob: float = Field(0.5, ge=0, le=1)
    max_n_fraction: float = Field(0.1, ge=0, le=1)
    storage_options: dict[str, Any] = Field(default_factory=dict, description="endpoint_url, anon; never keys")

    @property
    def options(self) -> dict | None:
        """``storage_options`` as the storage layer takes them (None when empty)."""
        return self.storage_options or None
