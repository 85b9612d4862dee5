"""Count tables with back-off: the strongest counting reference for a hidden base, in any geometry.

A model that predicts a hidden base sees some bases on each side of it, not always the same number:
the window ends, or other hidden bases stand between it and the nearest visible ones. The reference
it must beat predicts the base from *exactly those* bases: on each side, past the hidden bases next
to it (``left_gap``, ``right_gap``), up to ``m`` contiguous visible bases (``left_len``,
``right_len``), counted at the same offsets in the training split on both strands, so it sees what
the model sees and no more.

The estimator backs off through shorter contexts with a Dirichlet prior (interpolated smoothing):
for a context ``c`` with ``n(c, x)`` training counts,

    P(x | c) = (n(c, x) + alpha * P(x | c')) / (n(c) + alpha)

where ``c'`` is ``c`` one base shorter on its longer side (the left side on a tie), down to no
context and then to 1/4. Each context length has its own ``alpha``, chosen by the leave-one-out
likelihood of the training bases it counted (never the scored bases): a long context seen a few
times is mostly noise in a genome and gets little weight, one that recurs (repeats, operons) gets
its own. Add-one tables, by contrast, dilute as contexts grow rare (the old ``base_table`` is best
at m = 3-4 on a bacterial genome); this one keeps improving with m while long contexts inform, so
its best m is the line to beat. (Absolute discounting with Kneser-Ney's estimated discounts was
tried first: on E. coli it gets worse than m = 4 from m = 5 on, as singletons of near-random
contexts take too much weight.)

Counting is vectorized: per context shape (bases and gap on each side), a pass over the training positions packs
each position's context into an int64 and looks it up among the queried contexts (a dense table or
a filter and ``searchsorted``), so only the contexts some query needs are counted; a shape scans only
the positions where its back-off parent found a queried context, so long contexts cost little.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from randommask.data.tokenizer import INVALID, reverse_complement_codes

ALPHAS = tuple(2.0**i for i in range(13))  # the prior strengths leave-one-out chooses from
THREADS = 2  # the counting passes run side by side (the development machine has two cores)
MAX_FLANK = 16  # 2 * 16 context bases + the base fit an int64 key


@dataclass(frozen=True)
class Queries:
    """The hidden bases to predict and what a predictor sees around each.

    ``left`` and ``right`` (N, M) hold the visible bases on each side, nearest first, starting past
    the ``left_gap`` / ``right_gap`` (N,) hidden bases next to the query (``left[:, 0]`` is the
    base ``left_gap + 1`` before it); ``left_len`` and ``right_len`` (N,) how many of them are
    usable (contiguous, valid, inside the window); ``base`` (N,) the true base's code (A=0, T=1,
    C=2, G=3), used only to score."""

    left: np.ndarray
    right: np.ndarray
    left_len: np.ndarray
    right_len: np.ndarray
    base: np.ndarray
    left_gap: np.ndarray | None = None  # None: no gap
    right_gap: np.ndarray | None = None

    def gaps(self) -> tuple[np.ndarray, np.ndarray]:
        """The gaps (0 where a side has no visible base: nothing is read there)."""
        zero = np.zeros(len(self.base), dtype=np.int64)
        lg = zero if self.left_gap is None else np.where(self.left_len > 0, self.left_gap, 0)
        rg = zero if self.right_gap is None else np.where(self.right_len > 0, self.right_gap, 0)
        return lg.astype(np.int64), rg.astype(np.int64)

    @property
    def width(self) -> int:
        return int(self.left.shape[1])

    @classmethod
    def concat(cls, parts: list["Queries"]) -> "Queries":
        """One set of queries from several (same side width), in order."""
        gaps = [q.gaps() for q in parts]
        return cls(*(np.concatenate([getattr(q, f) for q in parts]) for f in ("left", "right", "left_len",
                                                                                "right_len", "base")),
                   np.concatenate([g[0] for g in gaps]), np.concatenate([g[1] for g in gaps]))

    @classmethod
    def centred(cls, windows: np.ndarray) -> "Queries":
        """The centre base of each (N, 2h + 1) window of valid codes, every other base visible."""
        half = windows.shape[1] // 2
        left = windows[:, :half][:, ::-1]
        right = windows[:, half + 1 :]
        full = np.full(len(windows), half, dtype=np.int64)
        return cls(left, right, full, full.copy(), windows[:, half].astype(np.int64))


Shape = tuple[int, int, int, int]  # (a, b, left gap, right gap): a context's bases and where they stand


def _shape(a: int, b: int, left_gap: int, right_gap: int) -> Shape:
    return a, b, left_gap if a else 0, right_gap if b else 0  # a side with no base has no gap


def _chain(shape: Shape) -> list[Shape]:
    """The back-off order from a context shape down to no context: the side with more bases loses
    its farthest one first, the left one on a tie; the gaps stay."""
    a, b, lg, rg = shape
    out = [_shape(a, b, lg, rg)]
    while a or b:
        a, b = (a - 1, b) if a >= b and a else (a, b - 1)
        out.append(_shape(a, b, lg, rg))
    return out


def _side_values(codes: np.ndarray, width: int, direction: int) -> tuple[np.ndarray, np.ndarray]:
    """For every position of ``codes``: its ``width`` neighbours on one side packed nearest-first
    (base j at 4**j), and how many of them are contiguous valid bases (window ends count as
    invalid)."""
    n = len(codes)
    packed = np.zeros(n, dtype=np.int64)
    run = np.zeros(n, dtype=np.int64)
    alive = np.ones(n, dtype=bool)
    for j in range(1, width + 1):
        nb = np.full(n, INVALID, dtype=np.uint8)
        if direction < 0:
            nb[j:] = codes[:-j] if j < n else nb[j:]
        else:
            nb[:-j] = codes[j:] if j < n else nb[:-j]
        alive &= nb < INVALID
        run += alive
        packed |= np.where(alive, nb, 0).astype(np.int64) << (2 * (j - 1))
    return packed, run


def _shifted(values: np.ndarray, by: int) -> np.ndarray:
    """``values`` read ``by`` positions earlier (later if negative); 0 where that falls outside."""
    if by == 0:
        return values
    out = np.zeros_like(values)
    if by > 0:
        out[by:] = values[:-by]
    else:
        out[:by] = values[-by:]
    return out


def _keys(left: np.ndarray, right: np.ndarray, a: int, b: int) -> np.ndarray:
    """The int64 key of (a left bases, b right bases), from nearest-first packed sides."""
    return ((left & ((1 << (2 * a)) - 1)) << (2 * b)) | (right & ((1 << (2 * b)) - 1))


def _pack(sides: np.ndarray) -> np.ndarray:
    """(N, M) nearest-first codes -> nearest-first packed int64 (codes past a query's length are 0)."""
    weights = np.left_shift(np.int64(1), 2 * np.arange(sides.shape[1], dtype=np.int64))
    return (np.where(sides < INVALID, sides, 0).astype(np.int64) * weights).sum(axis=1)


DENSE_BASES = 8  # contexts of up to 8 bases are indexed by a dense table (4**8 entries)
HASH_BITS = 20  # longer ones pass a 2**20-bit filter before the exact search
_HASH = np.uint64(0x9E3779B97F4A7C15)  # Fibonacci hashing: multiply, keep the top bits


class ContextIndex:
    """Finds training contexts among the queried ones (``known``, sorted) fast: most training
    positions of a long context are not queried, and a filter drops them before ``searchsorted``."""

    def __init__(self, known: np.ndarray, bases: int) -> None:
        self.known, self.dense, self.filter = known, None, None
        if bases <= DENSE_BASES:
            self.dense = np.full(4**bases, -1, dtype=np.int64)
            self.dense[known] = np.arange(len(known))
        else:
            self.filter = np.zeros(1 << HASH_BITS, dtype=bool)
            self.filter[self.bucket(known)] = True

    @staticmethod
    def bucket(keys: np.ndarray) -> np.ndarray:
        return ((keys.astype(np.uint64) * _HASH) >> np.uint64(64 - HASH_BITS)).astype(np.int64)

    def find(self, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(positions of ``keys`` that are queried, their rows in ``known``)."""
        if self.dense is not None:
            at = self.dense[keys]
            where = np.flatnonzero(at >= 0)
            return where, at[where]
        where = np.flatnonzero(self.filter[self.bucket(keys)])
        at = np.searchsorted(self.known, keys[where]).clip(max=len(self.known) - 1)
        hit = self.known[at] == keys[where]
        return where[hit], at[hit]


def _held_out(n: np.ndarray, lower: np.ndarray, alpha: float) -> float:
    """Leave-one-out log-likelihood of the counted training bases ``n`` (contexts, 4) under prior
    strength ``alpha`` over the shorter contexts' ``lower``: each base scored without itself."""
    p = (n - 1 + alpha * lower) / (n.sum(axis=1, keepdims=True) - 1 + alpha)
    return float((n * np.log(np.where(n > 0, p, 1.0))).sum())


class BackoffTable:
    """Back-off count tables of the training pieces (both strands unless ``both_strands`` is False)
    for the contexts a set of queries needs, at every m of ``flanks``."""

    def __init__(self, train: list[np.ndarray], queries: Queries, flanks: tuple[int, ...],
                 both_strands: bool = True) -> None:
        width = min(max(flanks), queries.width, MAX_FLANK)  # a wider m sees no more than the queries hold
        self.q, self.flanks = queries, flanks
        self.left, self.right = _pack(queries.left[:, :width]), _pack(queries.right[:, :width])
        needed: dict[Shape, set[int]] = {}
        for m in flanks:
            shapes = self._shapes(m)
            for start in set(map(tuple, shapes.tolist())):
                rows = (shapes == start).all(axis=1)
                for a, b, lg, rg in _chain(start):
                    keys = _keys(self.left[rows], self.right[rows], a, b)
                    needed.setdefault((a, b, lg, rg), set()).update(keys.tolist())
        self.contexts = {shape: np.array(sorted(keys), dtype=np.int64) for shape, keys in needed.items()}
        self.counts = {shape: np.zeros((len(keys), 4), dtype=np.int64) for shape, keys in self.contexts.items()}
        self.index = {shape: ContextIndex(keys, shape[0] + shape[1]) for shape, keys in self.contexts.items()}
        for codes in train:
            for strand in (codes, reverse_complement_codes(codes)) if both_strands else (codes,):
                self._count(strand, width)
        self._fit()

    def _count(self, codes: np.ndarray, width: int) -> None:
        left, lrun = _side_values(codes, width, -1)
        right, rrun = _side_values(codes, width, +1)
        valid = codes < INVALID
        base = np.where(valid, codes, 0).astype(np.int64)
        # the side values of the base just past each gap: position p reads p - gap on the left, p + gap on the right
        lefts = {g: (_shifted(left, g), _shifted(lrun, g)) for g in {shape[2] for shape in self.contexts}}
        rights = {g: (_shifted(right, -g), _shifted(rrun, -g)) for g in {shape[3] for shape in self.contexts}}

        # A position whose context is queried also has its back-off parent's queried (the needed sets are
        # whole chains), so each shape scans only the positions its parent matched: the short contexts
        # pass over the strand, the long ones over the few positions left.
        children: dict[Shape, list[Shape]] = {}
        for shape in self.contexts:
            chain = _chain(shape)
            if len(chain) > 1:
                children.setdefault(chain[1], []).append(shape)

        def count(shape: Shape, candidates: np.ndarray) -> None:
            a, b, lg, rg = shape
            (lv, lr), (rv, rr) = lefts[lg], rights[rg]
            ok = candidates[(lr[candidates] >= a) & (rr[candidates] >= b)]
            where, at = self.index[shape].find(_keys(lv[ok], rv[ok], a, b))
            hits = ok[where]
            self.counts[shape] += np.bincount(at * 4 + base[hits],
                                              minlength=4 * len(self.contexts[shape])).reshape(-1, 4)
            for child in children.get(shape, ()):
                count(child, hits)

        root = _shape(0, 0, 0, 0)  # every chain ends there: no context
        if root not in self.contexts:  # no query
            return
        everything = np.flatnonzero(valid)
        self.counts[root] += np.bincount(base[everything], minlength=4).reshape(1, 4)
        with ThreadPoolExecutor(THREADS) as pool:  # numpy releases the GIL on these arrays
            list(pool.map(lambda shape: count(shape, everything), children.get(root, ())))

    def _fit(self) -> None:
        """Each context's distribution, shortest contexts first, and each context length's prior
        strength, chosen by leave-one-out likelihood of the training bases it counted."""
        self.probs: dict[Shape, np.ndarray] = {}
        self.alpha: dict[Shape, float] = {}
        for shape in sorted(self.contexts, key=lambda s: s[0] + s[1]):
            keys, n = self.contexts[shape], self.counts[shape].astype(np.float64)
            if shape[:2] == (0, 0):
                lower = np.full((len(keys), 4), 0.25)
            else:
                down_shape = _chain(shape)[1]
                down = _keys(keys >> (2 * shape[1]), keys, *down_shape[:2])  # the same context one base shorter
                lower = self.probs[down_shape][np.searchsorted(self.contexts[down_shape], down)]
            total = n.sum(axis=1, keepdims=True)
            seen = total[:, 0] > 0
            self.alpha[shape] = max(ALPHAS, key=lambda alpha: _held_out(n[seen], lower[seen], alpha))
            self.probs[shape] = (n + self.alpha[shape] * lower) / (total + self.alpha[shape])

    def log_probs(self, m: int) -> np.ndarray:
        """(N, 4) log P(base | up to ``m`` visible bases each side) for every query."""
        shapes = self._shapes(m)
        out = np.zeros((len(shapes), 4))
        for shape in set(map(tuple, shapes.tolist())):
            rows = np.flatnonzero((shapes == shape).all(axis=1))
            at = np.searchsorted(self.contexts[shape], _keys(self.left[rows], self.right[rows], *shape[:2]))
            out[rows] = np.log(self.probs[shape][at])
        return out

    def _shapes(self, m: int) -> np.ndarray:
        """(N, 4) each query's context shape with up to ``m`` bases each side."""
        a, b = np.minimum(self.q.left_len, m), np.minimum(self.q.right_len, m)
        lg, rg = self.q.gaps()
        return np.stack([a, b, np.where(a > 0, lg, 0), np.where(b > 0, rg, 0)], axis=1)

    def losses(self, rows: slice = slice(None)) -> dict[str, float]:
        """{m: mean -log P(true base)} over the queries (those of ``rows``), nats."""
        pick = self.q.base.astype(np.int64)[rows, None]
        return {str(m): float(-np.take_along_axis(self.log_probs(m)[rows], pick, 1).mean()) for m in self.flanks}


__all__ = ["BackoffTable", "Queries"]
