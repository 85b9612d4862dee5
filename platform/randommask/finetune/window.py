"""How many positions a fine-tuning trial feeds the model, and the check, before any trial, that they
were trained (``data.window``): a dataset whose sequences need more is refused in one line unless
``--allow-untrained-positions``."""

from __future__ import annotations

from typing import Callable

from randommask.data.tokenizer import KmerTokenizer
from randommask.data.window import trained_window
from randommask.evaluation import gue


def row_tokens(tok: KmerTokenizer, longest_bp: int, max_length: int, limit: int) -> int:
    """Tokens per row a trial pads and cuts to: its longest sequence's, capped by the protocol's
    ``max_length`` and the model's positions."""
    return min(tok.num_tokens(longest_bp), max_length, limit)


def check_trained_window(local_ckpt: str, checkpoint: str, gue_dir: str, names: list[str], max_train: int | None,
                         max_eval: int | None, allow: bool, storage_options: dict | None = None,
                         log: Callable[[str], None] = print) -> None:
    """Refuse (one line) the first dataset whose trials would read positions ``checkpoint`` never
    trained; the rows are the ones the trials draw (``gue.subsample``, seed 0)."""
    tok = KmerTokenizer.from_pretrained(local_ckpt)
    trained = trained_window(local_ckpt, checkpoint, tok)
    if not trained.recorded:
        return
    for name in names:
        longest = 0
        for split in gue.SPLITS:
            seqs, labels = gue.read_split(gue_dir, name, split, storage_options)
            rows, _ = gue.subsample(seqs, labels, max_train if split == "train" else max_eval, seed=0)
            longest = max(longest, max(len(s) for s in rows))
        need = row_tokens(tok, longest, gue.REGISTRY[name].max_length, trained.limit)
        trained.require(need, f"GUE {name} (sequences up to {longest} bp)", allow, log)
