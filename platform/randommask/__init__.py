"""randommask: RandomMask pretraining of DNA language models (overlapping k-mer BERT) on Ray.

The stable public API is the names below; module paths inside the package may move. Importing
``randommask`` is light: each name loads its module (and torch or Ray with it) on first use.

    from randommask import KmerTokenizer, make_masker, build_mlm, mlm_loss, pretraining_dataset
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

# public name -> the module that defines it
_API = {
    "KmerTokenizer": "randommask.data.tokenizer",
    "pretraining_dataset": "randommask.data.stream",
    "DataSection": "randommask.data.config",
    "make_masker": "randommask.training.masking",
    "build_mlm": "randommask.training.model",
    "mlm_loss": "randommask.training.model",
    "PretrainConfig": "randommask.training.config",
    "load_config": "randommask.training.config",
    "pretrain": "randommask.training.driver",
}

__all__ = [*_API, "__version__"]


def __getattr__(name: str) -> Any:
    module = _API.get(name)
    if module is None:
        raise AttributeError(f"module 'randommask' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
