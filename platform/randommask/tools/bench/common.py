"""What every benchmark shares: the genome, best-of timing, windows as text, the baseline's tokenizer."""

from __future__ import annotations

import copy
import random
import tempfile
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from randommask.common.assets import GENOME_SLICE
from randommask.data.genome import cut_windows, genome_codes
from randommask.data.tokenizer import ALPHABET, KmerTokenizer
from randommask.errors import UserError


def resolve_genome(genome: str | None) -> Path:
    path = Path(genome) if genome else GENOME_SLICE
    if not path.is_file():
        raise UserError(f"genome {path} not found; pass --genome PATH to a FASTA file")
    return path


def best_time(fn: Callable[[], object], repeat: int = 3) -> float:
    """Best wall time of ``repeat`` runs, after one warm-up run."""
    fn()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def windows_as_str(genome: str | None, n: int, window_bp: int, seed: int) -> list[str]:
    codes = cut_windows(genome_codes(resolve_genome(genome)), window_bp, n, seed)
    letters = np.frombuffer(ALPHABET.encode() + b"N", dtype=np.uint8)
    return [row.tobytes().decode() for row in letters[codes]]


def hf_tokenizer(k: int):
    from transformers import BertTokenizerFast

    with tempfile.TemporaryDirectory() as d:
        KmerTokenizer(k).save_pretrained(d)
        return BertTokenizerFast.from_pretrained(d)


def token_batch(genome: str | None, batch: int, window_bp: int, k: int, seed: int) -> torch.Tensor:
    codes = cut_windows(genome_codes(resolve_genome(genome)), window_bp, batch, seed)
    return torch.from_numpy(KmerTokenizer(k).encode_windows(codes)).long()


def dnabert_style_mask(input_ids: torch.Tensor, hf_tokenizer, centre_prob: float, span_lo: int, span_hi: int,
                       rng: random.Random) -> tuple[torch.Tensor, torch.Tensor]:
    """DNABERT's masking procedure (run_pretrain.py's mask_tokens), widened to RandomMask's variable
    spans: a per-row Python special-token mask from the tokenizer, then a Python loop over every
    centre of every row. The reference the vectorized masker is measured against."""
    labels = input_ids.clone()
    prob = torch.full(labels.shape, centre_prob)
    special = [hf_tokenizer.get_special_tokens_mask(row, already_has_special_tokens=True) for row in labels.tolist()]
    prob.masked_fill_(torch.tensor(special, dtype=torch.bool), 0.0)
    prob.masked_fill_(labels.eq(hf_tokenizer.pad_token_id), 0.0)
    masked = torch.bernoulli(prob).bool()
    centres_per_row = copy.deepcopy(masked)
    for i, row in enumerate(centres_per_row):
        end = torch.where(prob[i] != 0)[0].tolist()[-1]
        centres = set(torch.where(row == 1)[0].tolist())
        widened = copy.deepcopy(centres)
        for c in centres:
            m = rng.randint(span_lo, span_hi)
            for pos in range(c - (m - 1) // 2, c + m // 2 + 1):
                if 1 <= pos <= end:
                    widened.add(pos)
        masked[i][list(widened)] = True
    labels[~masked] = -100
    replaced = torch.bernoulli(torch.full(labels.shape, 0.8)).bool() & masked
    inputs = input_ids.clone()
    inputs[replaced] = hf_tokenizer.mask_token_id
    randomized = torch.bernoulli(torch.full(labels.shape, 0.5)).bool() & masked & ~replaced
    inputs[randomized] = torch.randint(len(hf_tokenizer), labels.shape, dtype=torch.long)[randomized]
    return inputs, labels
