"""Per-base loss: what a masked-LM knows about hidden *bases*, on one scale for every span width.

A [MASK]-only token loss mixes two skills: reading the bases that neighbouring k-mers show, and
knowing DNA. Its value also scales with how many bases a span hides, so span-k and span-2k losses
do not compare. The per-base loss takes the overlap away:

1. every selected token is [MASK] (no kept or random tokens);
2. a *hidden* base is one that no unmasked token shows;
3. each [MASK] token's distribution is restricted to the k-mers consistent with the visible bases
   and marginalized to each hidden base it covers;
4. the covering tokens are combined as ``score-variants`` combines them (geometric mean,
   renormalized over A, C, G, T);
5. the loss is the mean -log P(true base) over hidden bases, in nats.

Chance is ln 4 = 1.386 whatever the span. A perfect overlap reader that knows no DNA scores chance;
the best count table of the bases the model sees, in the same evaluation's geometry
(``floors.json``'s ``best_counting_span_k`` / ``best_counting_span_2k``), is the line for knowledge
beyond counting.
"""

from __future__ import annotations

import torch

from randommask.data.floors import visible_bases
from randommask.data.tokenizer import MASK, NUM_SPECIAL


def offset_log_probs(kmer_logits: torch.Tensor, visible: torch.Tensor, digits: torch.Tensor) -> torch.Tensor:
    """(N, 4**k) k-mer logits, (N, k) which offsets' bases are visible and (N, k) the true bases ->
    (N, k, 4): log P(base at each offset) under the distribution restricted to the k-mers that agree
    with every visible base. Offsets whose base is visible get a point mass on it."""
    n, k = visible.shape
    shape = (n,) + (4,) * k
    logits = kmer_logits.float().reshape(shape)
    allowed = torch.ones(n, k, 4, dtype=torch.bool, device=logits.device)
    allowed[visible] = torch.nn.functional.one_hot(digits[visible], 4).bool()
    penalty = torch.where(allowed, 0.0, float("-inf"))
    for i in range(k):  # sum of k rank-1 masks: the consistent k-mers are a product set
        view = [n] + [1] * k
        view[1 + i] = 4
        logits = logits + penalty[:, i].reshape(view)
    total = torch.logsumexp(logits.reshape(n, -1), dim=1)
    dims = list(range(1, k + 1))
    out = []
    for i in range(k):
        rest = [d for d in dims if d != 1 + i]  # k = 1: nothing to sum out (an empty dim list would sum everything)
        out.append((torch.logsumexp(logits, dim=rest) if rest else logits) - total[:, None])
    return torch.stack(out, dim=1)


def all_mask(inputs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """The evaluation inputs with every selected token replaced by [MASK]."""
    return torch.where(labels != -100, torch.full_like(inputs, MASK), inputs)


def per_base_sums(logits: torch.Tensor, inputs: torch.Tensor, labels: torch.Tensor, k: int,
                  stride: int = 1) -> tuple[float, int]:
    """``(sum of -log P(true base), number of hidden bases)`` of one batch of windows.

    ``inputs`` and ``labels`` (B, L) are a masked batch (its labelled positions are the selected
    tokens); ``logits`` (N, vocab) are the model's outputs at those positions, in row-major order,
    for :func:`all_mask` of the inputs. Bases that only special tokens cover ([UNK] k-mers) are not
    scored."""
    truth = torch.where(labels == -100, inputs, labels)
    selected = labels != -100
    shows = ~selected & (truth >= NUM_SPECIAL)  # in the all-[MASK] inputs an unselected token is its truth
    visible = visible_bases(shows, k, stride)  # (B, n_bases)
    n_bases = visible.shape[1]
    rows, toks = selected.nonzero(as_tuple=True)
    kmer = truth[rows, toks] - NUM_SPECIAL
    ok = (kmer >= 0) & (toks >= 1)
    rows, toks, kmer, logits = rows[ok], toks[ok], kmer[ok], logits[ok]
    if not len(rows):
        return 0.0, 0
    span = torch.arange(k, device=rows.device)
    offsets = (toks - 1)[:, None] * stride + span  # (N, k): the window base at each k-mer offset
    inside = offsets < n_bases
    offsets = offsets.clamp(max=n_bases - 1)
    digits = (kmer[:, None] >> (2 * (k - 1 - span))) & 3
    shown = visible[rows[:, None], offsets] | ~inside
    log_p = offset_log_probs(logits[:, NUM_SPECIAL : NUM_SPECIAL + 4**k], shown, digits)
    hidden = ~shown
    where = (rows[:, None] * n_bases + offsets)[hidden]
    total = torch.zeros(len(inputs) * n_bases, 4, dtype=torch.float64, device=rows.device)
    count = torch.zeros(len(inputs) * n_bases, dtype=torch.float64, device=rows.device)
    base = torch.zeros(len(inputs) * n_bases, dtype=torch.long, device=rows.device)
    total.index_add_(0, where, log_p[hidden].double())
    count.index_add_(0, where, torch.ones_like(where, dtype=torch.float64))
    base[where] = digits[hidden]
    scored = count > 0
    combined = torch.log_softmax(total[scored] / count[scored, None], dim=-1)  # geometric mean, renormalized
    return float(-combined.gather(1, base[scored, None]).sum()), int(scored.sum())
