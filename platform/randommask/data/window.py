"""The trained window: how many bases (and so positions) a model's pretraining windows held.

Pretraining records it in the model's own ``config.json`` (``randommask_window_bp``,
``randommask_window_tokens``, beside ``kmer``), so it travels with the Hugging Face directory: a
run's ``final/`` and ``step_*/model/``, a copy of either anywhere, and fine-tuned models (their
config is the pretrained one's). A model reads positions past the trained ones with position
embeddings that never received a gradient: the commands default to the trained window, and refuse
inputs that need more positions (one line) unless ``--allow-untrained-positions`` is given.

A directory without the record (any DNABERT checkpoint, or ours from before it) proceeds as it
always did: the window of its run's ``config.yaml`` where that is beside it, else all its positions.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Any, Callable

from randommask.common import rundir
from randommask.data.tokenizer import KmerTokenizer
from randommask.errors import UserError

WINDOW_BP = "randommask_window_bp"  # config.json: bases per pretraining window
WINDOW_TOKENS = "randommask_window_tokens"  # config.json: positions those windows took, [CLS] and [SEP] included
ALLOW_FLAG = "--allow-untrained-positions"


@dataclass(frozen=True)
class TrainedWindow:
    """What a checkpoint's positions were trained on, as far as it is known."""

    checkpoint: str  # as the user named it, for messages
    bp: int | None  # bases per pretraining window; None when not known
    positions: int  # positions the model reads by default: the trained ones, else all of them
    limit: int  # max_position_embeddings: positions it has at all
    recorded: bool  # the checkpoint's config.json records it: inputs needing more positions are refused
    source: str  # where ``bp`` came from, for logs

    def default_bp(self, tok: KmerTokenizer) -> int:
        """The window a command uses when none is given: the trained one, else all the model's positions."""
        return self.bp if self.bp is not None else tok.bases_for(self.limit)

    def require(self, need: int, what: str, allow: bool, log: Callable[[str], None] = print) -> None:
        """Stop (one line) when ``what`` needs more positions than were trained, before any work; with
        ``allow``, go on and say so. Nothing is refused for a checkpoint that does not record its window."""
        if not self.recorded or need <= self.positions:
            return
        line = (f"{what} needs {need} positions; {self.checkpoint} was pretrained on {self.positions} "
                f"(windows of {self.bp} bp), positions past that never trained")
        if not allow:
            raise UserError(f"{line}: give a shorter window or pass {ALLOW_FLAG} to use them anyway")
        log(f"warning  {line}; going on ({ALLOW_FLAG})")


def record(config: Any, tok: KmerTokenizer, window_bp: int) -> None:
    """Write the pretraining window into a model's config (``transformers`` saves unknown attributes in
    config.json). A model continued from one that records a wider window keeps the wider: those
    positions were trained too."""
    tokens = tok.num_tokens(window_bp)
    before = getattr(config, WINDOW_TOKENS, None)
    if isinstance(before, int) and before > tokens and isinstance(getattr(config, WINDOW_BP, None), int):
        return
    setattr(config, WINDOW_BP, int(window_bp))
    setattr(config, WINDOW_TOKENS, int(tokens))


def recorded_bp(config: dict[str, Any]) -> int | None:
    """The pretraining window a config (as a mapping) records, if any."""
    bp = config.get(WINDOW_BP)
    return bp if isinstance(bp, int) and not isinstance(bp, bool) and bp > 0 else None


def trained_window(local_dir: str, checkpoint: str, tok: KmerTokenizer) -> TrainedWindow:
    """The trained window of the Hugging Face directory ``local_dir`` (``checkpoint`` as the user gave
    it): its config.json's record, else its run's config.yaml (an older run directory), else none."""
    path = os.path.join(local_dir, "config.json")
    try:
        config = json.loads(open(path, encoding="utf-8").read())
    except (OSError, ValueError) as e:
        raise UserError(f"{checkpoint}: cannot read config.json ({e})") from None
    limit = int(config.get("max_position_embeddings") or 512)
    bp = recorded_bp(config)
    if bp is not None:
        tokens = config.get(WINDOW_TOKENS)
        positions = tokens if isinstance(tokens, int) and tokens > 0 else tok.num_tokens(bp)
        return TrainedWindow(checkpoint, bp, min(positions, limit), limit, True, "its config.json")
    bp = rundir.training_window(checkpoint)
    if bp is not None:
        return TrainedWindow(checkpoint, bp, min(tok.num_tokens(bp), limit), limit, False, "its run's config.yaml")
    return TrainedWindow(checkpoint, None, limit, limit, False, "not recorded")
