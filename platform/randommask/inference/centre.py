"""Scoring one base of a window, as ``score-variants`` and ``zeroshot`` do: mask the tokens that
cover it, read each one's log-probabilities of the four k-mers that differ only there, combine them
(geometric mean, renormalized; docs/inference.md), and average the two strands.

The reverse strand is the reverse complement of the window, in which the base sits at the mirrored
position. Both strands' predictions of base b (A, C, G, T) are averaged in log space and renormalized,
so the LLR of a variant is the mean of the two strands' LLRs, as in GPN. With a window centred on
the base (odd width), a variant scored on a genome and on its reverse complement gets the same score.
"""

from __future__ import annotations

import numpy as np

from randommask.data.tokenizer import COMPLEMENT_CODE, MASK, KmerTokenizer, reverse_complement_codes

STRANDS = ("both", "forward")


def centred_window(window_bp: int) -> int:
    """The odd window length used for ``window_bp``: centred on the base, so both strands see the same bases."""
    return window_bp - (1 - window_bp % 2)


def masked_windows(codes: np.ndarray, q: int, tok: KmerTokenizer) -> tuple[np.ndarray, np.ndarray]:
    """(N, W) windows of valid codes (0-3) and the base position ``q`` -> token ids (N, L) with the tokens
    that cover q set to [MASK], and the ids of the four candidate k-mers at each of them (N, M, 4):
    candidate b has the base of code b (tokenizer.ALPHABET order) at q and the window's bases elsewhere."""
    n_tok = tok.num_kmers(codes.shape[1])
    cover = [j for j in range(n_tok) if j * tok.stride <= q < j * tok.stride + tok.k]
    cands = np.zeros((len(codes), len(cover), 4), np.int32)
    for b in range(4):
        edited = codes.copy()
        edited[:, q] = b
        cands[:, :, b] = tok.encode_windows(edited)[:, 1:-1][:, cover]
    ids = tok.encode_windows(codes)
    ids[:, [1 + j for j in cover]] = MASK
    return ids, cands


def strand_windows(codes: np.ndarray, q: int, strands: str = "both") -> list[tuple[np.ndarray, int]]:
    """The windows to score for the base at ``q``: (codes, position) of the forward strand and, for
    ``both``, of the reverse complement."""
    out = [(codes, q)]
    if strands == "both":
        out.append((reverse_complement_codes(codes), codes.shape[-1] - 1 - q))
    return out


def base_log_probs(candidate_log_probs: np.ndarray) -> np.ndarray:
    """(..., M, 4) log-probabilities of the candidates at the M masked tokens -> (..., 4) log P(base),
    the normalized geometric mean of the tokens' predictions."""
    score = np.asarray(candidate_log_probs, dtype=np.float64).mean(-2)
    score = score - score.max(-1, keepdims=True)
    return score - np.log(np.exp(score).sum(-1, keepdims=True))


def combine_strands(forward: np.ndarray, reverse: np.ndarray | None) -> np.ndarray:
    """(..., 4) log P(base) of each strand, by code (the reverse one over its own strand's bases)
    -> (..., 4) over the forward strand's bases: the renormalized mean in log space."""
    if reverse is None:
        return forward
    score = (forward + reverse[..., COMPLEMENT_CODE[:4]]) / 2  # the reverse strand's complement of each base
    score = score - score.max(-1, keepdims=True)
    return score - np.log(np.exp(score).sum(-1, keepdims=True))
