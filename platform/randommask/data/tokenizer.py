"""DNABERT-compatible k-mer tokenizer, vectorized with numpy.

Ids follow DNABERT's published vocabularies: five special tokens, then every k-mer in the order
``itertools.product("ATCG", repeat=k)`` enumerates them. With nucleotide codes A=0, T=1, C=2, G=3
that order is plain base-4 positional value, so a k-mer's id is ``5 + sum(code_j * 4**(k-1-j))``
and tokenizing is k vectorized multiply-adds over the byte array, with no Python work per k-mer.
"""

from __future__ import annotations

import itertools
import json
import os
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from randommask.errors import UserError

PAD, UNK, CLS, SEP, MASK = 0, 1, 2, 3, 4
SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
NUM_SPECIAL = len(SPECIAL_TOKENS)
ALPHABET = "ATCG"
INVALID = 4  # code for any byte that is not A/C/G/T (either case)
MAX_K = 8

# byte -> nucleotide code; lowercase (soft-masked repeats) encodes like uppercase.
CODE_OF_BYTE = np.full(256, INVALID, dtype=np.uint8)
for _code, _base in enumerate(ALPHABET):
    CODE_OF_BYTE[ord(_base)] = _code
    CODE_OF_BYTE[ord(_base.lower())] = _code
# complement in code space: A<->T, C<->G; invalid stays invalid.
COMPLEMENT_CODE = np.array([1, 0, 3, 2, INVALID], dtype=np.uint8)

_CONFIG_NAME = "tokenizer_config.json"


def vocab_size_for(k: int) -> int:
    return 4**k + NUM_SPECIAL


def kmer_vocab(k: int) -> list[str]:
    """The DNABERT vocabulary for k: special tokens, then k-mers in ``product("ATCG")`` order."""
    return list(SPECIAL_TOKENS) + ["".join(p) for p in itertools.product(ALPHABET, repeat=k)]


_CODE_TABLE = CODE_OF_BYTE.tobytes()


def codes_from_bytes(data: bytes | bytearray | memoryview | np.ndarray) -> np.ndarray:
    """Nucleotide codes (uint8, 0..3, INVALID=4) for raw sequence bytes."""
    if isinstance(data, np.ndarray):
        return CODE_OF_BYTE[data]
    # bytes.translate is a C loop over a 256-entry table: several times faster than fancy indexing.
    return np.frombuffer(bytes(data).translate(_CODE_TABLE), dtype=np.uint8)


def kmer_ids_from_codes(codes: np.ndarray, k: int, stride: int = 1) -> np.ndarray:
    """Token ids of the k-mers along the last axis of ``codes`` (no [CLS]/[SEP]).

    ``codes`` has shape (..., L) with values from :func:`codes_from_bytes`; the result has shape
    (..., n) with n = (L - k) // stride + 1 (0 when L < k), dtype int32. A k-mer holding any
    INVALID code is [UNK].
    """
    length = codes.shape[-1]
    n = (length - k) // stride + 1 if length >= k else 0
    if n == 0:
        return np.zeros(codes.shape[:-1] + (0,), dtype=np.int32)
    if stride == k:
        # Non-overlapping: each k-mer is one row of a (..., n, k) view; weight and sum.
        blocks = codes[..., : n * k].reshape(codes.shape[:-1] + (n, k))
        weights = (4 ** np.arange(k - 1, -1, -1)).astype(np.int32)
        value = (blocks & 3).astype(np.int32) @ weights
        bad = (blocks == INVALID).any(-1)
    else:
        # Overlapping: build values of 1-, 2-, 4-mers by doubling (each a shift and an OR over the
        # array), then join the powers of two that sum to k: log2(k) passes instead of k.
        # 4**8 values fit uint16, so intermediate arrays stay small.
        span = (n - 1) * stride + 1
        vals = {1: (codes & 3).astype(np.uint16)}
        bads = {1: codes == INVALID}
        p = 1
        while 2 * p <= k:
            v, b = vals[p], bads[p]
            vals[2 * p] = (v[..., :-p] << (2 * p)) | v[..., p:]
            bads[2 * p] = b[..., :-p] | b[..., p:]
            p *= 2
        parts = [q for q in sorted(vals, reverse=True) if k & q]
        value = vals[parts[0]][..., :span].astype(np.int32)
        bad = bads[parts[0]][..., :span]
        offset = parts[0]
        for q in parts[1:]:
            value = (value << (2 * q)) | vals[q][..., offset : offset + span]
            bad = bad | bads[q][..., offset : offset + span]
            offset += q
        if stride != 1:
            value, bad = value[..., ::stride], bad[..., ::stride]
    value += NUM_SPECIAL
    value[bad] = UNK
    return value


def _check_k_stride(k: object, stride: object) -> tuple[int, int]:
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 1 <= int(k) <= MAX_K:
        raise UserError(f"k must be an integer from 1 to {MAX_K}, got {k!r}")
    if isinstance(stride, bool) or not isinstance(stride, (int, np.integer)) or int(stride) < 1:
        raise UserError(f"stride must be an integer >= 1, got {stride!r}")
    return int(k), int(stride)


class KmerTokenizer:
    """Overlapping (stride 1) or non-overlapping (stride k) k-mer tokenizer with DNABERT's ids."""

    def __init__(self, k: int = 6, stride: int = 1) -> None:
        self.k, self.stride = _check_k_stride(k, stride)
        self.vocab_size = vocab_size_for(self.k)
        self.pad_token_id, self.unk_token_id = PAD, UNK
        self.cls_token_id, self.sep_token_id, self.mask_token_id = CLS, SEP, MASK

    def __repr__(self) -> str:
        return f"KmerTokenizer(k={self.k}, stride={self.stride})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, KmerTokenizer) and (self.k, self.stride) == (other.k, other.stride)

    # ---- sizes -------------------------------------------------------------------------------
    def num_kmers(self, length_bp: int) -> int:
        return (length_bp - self.k) // self.stride + 1 if length_bp >= self.k else 0

    def num_tokens(self, length_bp: int) -> int:
        """Tokens for a sequence of ``length_bp`` bases, [CLS] and [SEP] included: the positions it needs."""
        return self.num_kmers(length_bp) + 2

    def bases_for(self, positions: int) -> int:
        """The most bases whose k-mers, with [CLS] and [SEP], fit ``positions`` positions (the inverse of
        :meth:`num_tokens`): 512 positions hold 515 bases of overlapping 6-mers."""
        if positions < 3:
            raise UserError(f"{positions} positions hold no k-mer beside [CLS] and [SEP]")
        return (positions - 3) * self.stride + self.k

    @property
    def vocab(self) -> list[str]:
        return kmer_vocab(self.k)

    # ---- encoding ----------------------------------------------------------------------------
    def encode(self, seq: str) -> list[int]:
        """``[CLS] k-mers... [SEP]`` for one sequence."""
        if not isinstance(seq, str):
            raise UserError(f"encode() takes a str, got {type(seq).__name__}")
        return self.encode_batch([seq])["input_ids"][0, : self.num_tokens(len(seq))].tolist()

    def encode_windows(self, codes: np.ndarray) -> np.ndarray:
        """Ids with [CLS]/[SEP] for a (B, W) array of equal-length windows of nucleotide codes.

        This is the hot path of the data pipeline: one vectorized pass, no padding needed.
        """
        kmers = kmer_ids_from_codes(codes, self.k, self.stride)
        out = np.empty(kmers.shape[:-1] + (kmers.shape[-1] + 2,), dtype=np.int32)
        out[..., 0] = CLS
        out[..., 1:-1] = kmers
        out[..., -1] = SEP
        return out

    def encode_batch(
        self, seqs: Sequence[str], max_length: int | None = None
    ) -> dict[str, np.ndarray]:
        """Encode many sequences into right-padded ``input_ids`` and ``attention_mask`` (B, L).

        With ``max_length`` every row has exactly that many tokens: k-mers are truncated so that
        [CLS] and [SEP] still fit, or the row is padded.
        """
        if isinstance(seqs, str) or not isinstance(seqs, Iterable):
            raise UserError("encode_batch() takes a list of str")
        seqs = list(seqs)
        for i, s in enumerate(seqs):
            if not isinstance(s, str):
                raise UserError(f"encode_batch(): item {i} is {type(s).__name__}, not str")
        if max_length is not None and (isinstance(max_length, bool) or int(max_length) < 2):
            raise UserError(f"max_length must be >= 2 to hold [CLS] and [SEP], got {max_length!r}")
        encoded = [s.encode("latin-1", errors="replace") for s in seqs]
        lengths = np.fromiter((len(b) for b in encoded), dtype=np.int64, count=len(encoded))
        n_kmers = np.where(lengths >= self.k, (lengths - self.k) // self.stride + 1, 0)
        if max_length is not None:
            n_kmers = np.minimum(n_kmers, int(max_length) - 2)
        width = int(max_length) if max_length is not None else int(n_kmers.max(initial=0)) + 2
        batch = len(encoded)
        ids = np.full((batch, width), PAD, dtype=np.int64)
        attn = np.zeros((batch, width), dtype=np.int64)
        if batch == 0:
            return {"input_ids": ids, "attention_mask": attn}

        if (lengths == lengths[0]).all():
            # Equal lengths (genome windows): a (B, L) view, no gathering.
            codes = codes_from_bytes(b"".join(encoded)).reshape(batch, int(lengths[0]))
            kmers = kmer_ids_from_codes(codes, self.k, self.stride)
        else:
            # Ragged: tokenize the concatenation once, then gather each row's own k-mer starts;
            # starts never reach past a row's end, so no k-mer spans two sequences.
            codes = codes_from_bytes(b"".join(encoded))
            all_ids = kmer_ids_from_codes(codes, self.k, 1)
            offsets = np.concatenate(([0], np.cumsum(lengths)[:-1]))
            cols = np.arange(int(n_kmers.max(initial=0)))
            starts = offsets[:, None] + self.stride * cols[None, :]
            valid = cols[None, :] < n_kmers[:, None]
            kmers = all_ids[np.where(valid, starts, 0)] if len(all_ids) else starts * 0

        take = min(kmers.shape[1], width - 2)
        ids[:, 0] = CLS
        if (n_kmers == take).all():
            # Every row full (genome windows): plain slice copies, no masks.
            ids[:, 1 : take + 1] = kmers[:, :take]
            ids[:, take + 1] = SEP
            attn[:, : take + 2] = 1
        else:
            cols = np.arange(width)[None, :]
            inner = cols[:, 1 : 1 + take] <= n_kmers[:, None]
            ids[:, 1 : 1 + take] = np.where(inner, kmers[:, :take], PAD)
            ids[np.arange(batch), n_kmers + 1] = SEP
            attn[cols < (n_kmers[:, None] + 2)] = 1
        return {"input_ids": ids, "attention_mask": attn}

    def decode_kmers(self, ids: Iterable[int]) -> list[str]:
        vocab = self.vocab
        return [vocab[int(i)] for i in ids]

    # ---- Hugging Face files --------------------------------------------------------------------
    def save_pretrained(self, directory: str | os.PathLike) -> list[str]:
        """Write vocab.txt and configs that plain ``transformers.AutoTokenizer`` loads as DNABERT's."""
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        (d / "vocab.txt").write_text("\n".join(self.vocab) + "\n")
        config = {
            "tokenizer_class": "BertTokenizer",
            "do_lower_case": False,
            "do_basic_tokenize": True,
            "tokenize_chinese_chars": False,
            "strip_accents": False,
            "model_max_length": 512,
            "pad_token": "[PAD]",
            "unk_token": "[UNK]",
            "cls_token": "[CLS]",
            "sep_token": "[SEP]",
            "mask_token": "[MASK]",
            # randommask's own keys; transformers ignores them.
            "kmer": self.k,
            "kmer_stride": self.stride,
        }
        (d / _CONFIG_NAME).write_text(json.dumps(config, indent=2) + "\n")
        special = {t.strip("[]").lower() + "_token": t for t in SPECIAL_TOKENS}
        (d / "special_tokens_map.json").write_text(json.dumps(special, indent=2) + "\n")
        return [str(d / n) for n in ("vocab.txt", _CONFIG_NAME, "special_tokens_map.json")]

    @classmethod
    def from_pretrained(cls, directory: str | os.PathLike) -> "KmerTokenizer":
        """Load from a directory written by :meth:`save_pretrained` or a DNABERT checkpoint."""
        d = Path(directory)
        vocab_file = d / "vocab.txt"
        if not vocab_file.is_file():
            raise UserError(f"{d}: no vocab.txt; pass a directory written by save_pretrained or a DNABERT checkpoint")
        vocab = vocab_file.read_text().split("\n")
        while vocab and vocab[-1] == "":
            vocab.pop()
        k = None
        stride = 1
        cfg_file = d / _CONFIG_NAME
        if cfg_file.is_file():
            cfg = json.loads(cfg_file.read_text())
            k = cfg.get("kmer")
            stride = cfg.get("kmer_stride", 1)
        if k is None:  # DNABERT checkpoints: infer k from the vocabulary size, as DNABERT does
            sizes = {vocab_size_for(i): i for i in range(1, MAX_K + 1)}
            k = sizes.get(len(vocab))
            if k is None:
                raise UserError(f"{vocab_file}: {len(vocab)} tokens is not a k-mer vocabulary (4**k + 5)")
        tok = cls(k=k, stride=stride)
        if vocab != tok.vocab:
            raise UserError(f"{vocab_file}: token order differs from DNABERT's {k}-mer vocabulary")
        return tok


def reverse_complement_codes(codes: np.ndarray) -> np.ndarray:
    """Reverse complement along the last axis, in code space."""
    return COMPLEMENT_CODE[codes[..., ::-1]]


_RC_TABLE = str.maketrans("ACGTacgt", "TGCAtgca")


def reverse_complement(seq: str) -> str:
    """Reverse complement of a sequence string, case kept; other letters (N) stay as they are."""
    return seq.translate(_RC_TABLE)[::-1]
