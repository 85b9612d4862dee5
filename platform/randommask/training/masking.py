"""MLM masking for overlapping k-mer tokens: BERT, DNABERT's span masking, and RandomMask.

A masker runs inside the training step on whatever device holds ``input_ids``: every choice is a
tensor op over the whole (B, L) batch, with no Python loop over rows, positions or span centres.
Spans are laid with a difference array: +1 where a span starts, -1 after it ends, and a cumulative
sum marks every covered position, whatever the number and lengths of the spans.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass
from typing import Sequence

import torch

from randommask.data.tokenizer import MASK, NUM_SPECIAL, vocab_size_for
from randommask.errors import UserError

# The schedule reported for the paper: the step at which each phase ends.
PAPER_PHASE_ENDS = (30000, 60000, 100000, 150000, 480000)


def _prob(name: str, value: float, closed: bool = False) -> float:
    """A probability in (0, 1), or in [0, 1] when ``closed`` (replacement shares may be all or nothing)."""
    ok = not isinstance(value, bool) and isinstance(value, (int, float))
    ok = ok and (0.0 <= float(value) <= 1.0 if closed else 0.0 < float(value) < 1.0)
    if not ok:
        where = "between 0 and 1" if closed else "strictly between 0 and 1"
        raise UserError(f"{name} must be a probability {where}, got {value!r}")
    return float(value)


def _positive_int(name: str, value: int, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise UserError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return value


@dataclass
class Masker:
    """Base: selection is strategy-specific; the 80/10/10 replacement is shared."""

    k: int
    mask_token_prob: float = 0.8
    random_token_prob: float = 0.1

    def __post_init__(self) -> None:
        _positive_int("k", self.k)
        self.mask_token_prob = _prob("mask_token_prob", self.mask_token_prob, closed=True)
        self.random_token_prob = _prob("random_token_prob", self.random_token_prob, closed=True)
        if self.mask_token_prob + self.random_token_prob > 1.0:
            raise UserError("mask_token_prob + random_token_prob must be at most 1")
        self.vocab_size = vocab_size_for(self.k)

    # -- to override ---------------------------------------------------------------------------
    def span_bounds(self, step: int) -> tuple[int, int]:
        raise NotImplementedError

    def select(self, input_ids: torch.Tensor, maskable: torch.Tensor, step: int,
               generator: torch.Generator | None) -> torch.Tensor:
        raise NotImplementedError

    # -- shared --------------------------------------------------------------------------------
    def __call__(self, input_ids: torch.Tensor, step: int,
                 generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Return ``(inputs, labels)``: labels hold the original id where selected, -100 elsewhere."""
        if input_ids.dim() != 2:
            raise UserError(f"input_ids must be (batch, length), got shape {tuple(input_ids.shape)}")
        # Special tokens ([PAD] [UNK] [CLS] [SEP] [MASK]) are exactly the ids below NUM_SPECIAL.
        maskable = input_ids >= NUM_SPECIAL
        selected = self.select(input_ids, maskable, int(step), generator) & maskable
        labels = torch.where(selected, input_ids, -100)
        p_mask, p_rand = self.mask_token_prob, self.random_token_prob
        if p_mask == 1.0:  # every selected token becomes [MASK]: no replacement draw at all
            return input_ids.masked_fill(selected, MASK), labels
        # One uniform decides mask / random / keep; within the random band it is still uniform,
        # so it also picks the random k-mer: no second draw over the whole batch.
        u = torch.rand(input_ids.shape, device=input_ids.device, generator=generator)
        if p_rand == 0.0:
            replacement = torch.tensor(MASK, dtype=input_ids.dtype, device=input_ids.device)
        else:
            n_kmers = self.vocab_size - NUM_SPECIAL
            # u - p_mask is exact in the random band (Sterbenz), so ids never fall below the first
            # k-mer; the scale sits a hair low so that rounding never passes the last one.
            scale = n_kmers / p_rand * (1 - 1e-6)
            random_ids = u.sub(p_mask).mul_(scale).add_(NUM_SPECIAL).to(input_ids.dtype)
            replacement = random_ids.masked_fill_(u < p_mask, MASK)
        inputs = torch.where(selected & (u < p_mask + p_rand), replacement, input_ids)
        return inputs, labels


@dataclass
class BertMasker(Masker):
    mask_prob: float = 0.15

    def __post_init__(self) -> None:
        super().__post_init__()
        self.mask_prob = _prob("mask_prob", self.mask_prob)

    def span_bounds(self, step: int) -> tuple[int, int]:
        return (1, 1)

    def select(self, input_ids, maskable, step, generator):
        return torch.rand(input_ids.shape, device=input_ids.device, generator=generator) < self.mask_prob


def cover_spans(centres: torch.Tensor, lengths: torch.Tensor, max_length: int) -> torch.Tensor:
    """Positions covered by spans of ``lengths`` tokens at each True in ``centres``.

    A span of m tokens at centre c covers ``[c - (m-1)//2, c + m//2]``, clipped at the edges.
    ``lengths`` is (B, L) (only read where ``centres``) or a scalar tensor, at most ``max_length``.
    """
    batch, length = centres.shape
    dev = centres.device
    # The difference array is padded by max_length on both sides, so span ends never need clamping:
    # starts before 0 still raise the running sum from the first real position on.
    pad = max_length
    pos = torch.arange(pad, pad + length, device=dev)
    # lengths are >= 1, so a shift is a floor division by 2 (integer division is slow on CPU);
    # c + m//2 + 1 == c - (m-1)//2 + m, so the stop (one past the end) is start + length.
    starts = (pos - ((lengths - 1) >> 1)).expand(batch, length)
    stops = starts + lengths
    ones = centres.to(torch.int32)
    diff = torch.zeros(batch, length + 2 * pad + 1, dtype=torch.int32, device=dev)
    diff.scatter_add_(1, starts, ones)
    diff.scatter_add_(1, stops, ones.neg_())
    return diff[:, : pad + length].cumsum(1)[:, pad:] > 0


@dataclass
class SpanMasker(Masker):
    """DNABERT: centres with ``centre_prob``, each widened to a span of ``span`` tokens (default k)."""

    centre_prob: float = 0.025
    span: int | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        self.centre_prob = _prob("centre_prob", self.centre_prob)
        self.span = _positive_int("span", self.k if self.span is None else self.span)

    def span_bounds(self, step: int) -> tuple[int, int]:
        return (self.span, self.span)

    def select(self, input_ids, maskable, step, generator):
        centres = (torch.rand(input_ids.shape, device=input_ids.device, generator=generator) < self.centre_prob)
        centres &= maskable
        return cover_spans(centres, torch.tensor(self.span, device=input_ids.device), self.span)


@dataclass
class RandomMasker(Masker):
    """RandomMask: DNABERT's centres, with a span boundary that widens phase by phase.

    In phase i (``phase_ends[i-1] <= step < phase_ends[i]``) the boundary is
    ``start_span + i * span_step``; after the last end the last phase holds. Each centre's span
    length is uniform on ``[start_span, boundary]`` (``sampling="uniform"``) or the boundary.
    """

    centre_prob: float = 0.025
    phase_ends: Sequence[int] = PAPER_PHASE_ENDS
    start_span: int | None = None
    span_step: int = 2
    sampling: str = "uniform"
    keep_ratio: bool = False

    def __post_init__(self) -> None:
        super().__post_init__()
        self.centre_prob = _prob("centre_prob", self.centre_prob)
        self.start_span = _positive_int("start_span", self.k if self.start_span is None else self.start_span)
        self.span_step = _positive_int("span_step", self.span_step, minimum=0)
        ends = list(self.phase_ends) if isinstance(self.phase_ends, (list, tuple)) else None
        if not ends:
            raise UserError(f"phase_ends must be a non-empty list of steps, got {self.phase_ends!r}")
        if any(isinstance(e, bool) or not isinstance(e, int) for e in ends):
            raise UserError(f"phase_ends must be a list of integer steps, got {ends}")
        if ends[0] < 1 or any(b <= a for a, b in zip(ends, ends[1:])):
            raise UserError(f"phase_ends must be strictly increasing positive steps, got {ends}")
        self.phase_ends = tuple(ends)
        if self.sampling not in ("uniform", "boundary"):
            raise UserError(f"sampling must be 'uniform' or 'boundary', got {self.sampling!r}")
        if not isinstance(self.keep_ratio, bool):
            raise UserError(f"keep_ratio must be true or false, got {self.keep_ratio!r}")

    def phase(self, step: int) -> int:
        return min(bisect.bisect_right(self.phase_ends, step), len(self.phase_ends) - 1)

    def boundary(self, step: int) -> int:
        return self.start_span + self.phase(step) * self.span_step

    def span_bounds(self, step: int) -> tuple[int, int]:
        b = self.boundary(step)
        return (self.start_span, b) if self.sampling == "uniform" else (b, b)

    def _mean_span(self, step: int) -> float:
        lo, hi = self.span_bounds(step)
        return (lo + hi) / 2

    def centre_prob_at(self, step: int) -> float:
        if not self.keep_ratio:
            return self.centre_prob
        # Scale centres down as spans widen, so the masked fraction stays that of phase 0.
        return self.centre_prob * self._mean_span(0) / self._mean_span(step)

    def select(self, input_ids, maskable, step, generator):
        dev = input_ids.device
        p = self.centre_prob_at(step)
        u = torch.rand(input_ids.shape, device=dev, generator=generator)
        centres = (u < p) & maskable
        lo, hi = self.span_bounds(step)
        if lo == hi:
            lengths = torch.tensor(lo, device=dev)
        else:
            # Given u < p, u / p is uniform on [0, 1) and independent of being a centre, so the
            # centre's own draw also picks its span length: no second draw over the batch.
            # Clamped because non-centres (u >= p) get lengths past hi; they add nothing, but
            # their indices must stay inside the padded difference array.
            lengths = u.mul((hi - lo + 1) / p).add_(lo).long().clamp_(max=hi)
        return cover_spans(centres, lengths, hi)


# The registry: each strategy's name and class. A strategy's parameters are its dataclass fields
# (besides k); the config's masking section, the sweep and make_masker all read them from here.
STRATEGIES: dict[str, type[Masker]] = {"bert": BertMasker, "span": SpanMasker, "randommask": RandomMasker}


def strategy_params(strategy: str) -> tuple[str, ...]:
    """The parameters ``strategy`` takes, in declaration order."""
    return tuple(name for name in STRATEGIES[strategy].__dataclass_fields__ if name != "k")


def all_params() -> tuple[str, ...]:
    """Every parameter any strategy takes (the keys of the config's masking section besides strategy)."""
    return tuple(dict.fromkeys(name for s in STRATEGIES for name in strategy_params(s)))


def make_masker(strategy: str, k: int, **params) -> Masker:
    """Build a masker by name: ``"bert"``, ``"span"`` (DNABERT) or ``"randommask"``."""
    cls = STRATEGIES.get(strategy)
    if cls is None:
        raise UserError(f"unknown masking strategy {strategy!r}; choose one of {', '.join(STRATEGIES)}")
    allowed = strategy_params(strategy)
    unknown = sorted(set(params) - set(allowed))
    if unknown:
        raise UserError(f"masking strategy {strategy!r} takes no parameter {', '.join(unknown)}; "
                        f"it takes {', '.join(sorted(allowed))}")
    return cls(k=k, **params)
