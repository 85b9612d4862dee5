"""Linear probes on frozen embeddings: the direct measure of a representation (``randommask probe``)
and a quick downstream objective for sweeps.

A probe is a logistic regression (standardized features, sklearn's defaults, no tuning) fitted on the
training split and scored on the test split. Beside the model it fits the same probe on a *bag of
k-mers* (each sequence's k-mer counts): what a probe gets from knowing which k-mers a sequence holds
and nothing else. A representation adds something for the task only where it beats the bag; chance
is MCC 0.

A model pretrained on short windows has never trained its later position embeddings: with
``window_bp`` each sequence is read as consecutive windows of that many bases that share no k-mer
(every k-mer in exactly one window), and its embedding is the mean over all their tokens.
"""

from __future__ import annotations

import json
import time
from typing import Any, Callable

import numpy as np
import torch

from randommask.common import storage
from randommask.common.checkpoints import node_checkpoint, provenance
from randommask.data.tokenizer import KmerTokenizer, vocab_size_for
from randommask.data.window import trained_window
from randommask.errors import UserError
from randommask.evaluation import gue


def windows_of(seq: str, window_bp: int, k: int, stride: int = 1) -> list[str]:
    """``seq`` cut into windows of at most ``window_bp`` bases that together hold each of its k-mers
    exactly once (consecutive windows overlap by k - stride bases). A sequence shorter than k is
    one window, as it is."""
    per = (window_bp - k) // stride + 1  # k-mers in a full window
    if per < 1:
        raise UserError(f"--window-bp {window_bp}: shorter than one {k}-mer; give at least {k}")
    step, span = per * stride, (per - 1) * stride + k
    if len(seq) <= span:
        return [seq]
    return [seq[i : i + span] for i in range(0, len(seq) - k + 1, step)]


@torch.no_grad()
def embed(model_dir: str, seqs: list[str], batch: int = 128, window_bp: int | None = None) -> np.ndarray:
    """Mean-pooled last hidden states of the encoder (padding excluded); with ``window_bp``, pooled
    over all the tokens of the sequence's windows (``windows_of``)."""
    import transformers
    from transformers import BertModel

    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()  # one "Loading weights" bar per call otherwise
    tok = KmerTokenizer.from_pretrained(model_dir)
    model = BertModel.from_pretrained(model_dir, add_pooling_layer=False, attn_implementation="sdpa").eval()
    pieces, owner = list(seqs), np.arange(len(seqs))
    if window_bp is not None:
        cut = [windows_of(s, window_bp, tok.k, tok.stride) for s in seqs]
        pieces = [w for ws in cut for w in ws]
        owner = np.repeat(np.arange(len(seqs)), [len(ws) for ws in cut])
    max_len = min(tok.num_tokens(max(len(s) for s in pieces)), model.config.max_position_embeddings)
    sums = np.zeros((len(seqs), model.config.hidden_size), dtype=np.float64)
    counts = np.zeros(len(seqs), dtype=np.float64)
    for i in range(0, len(pieces), batch):
        enc = tok.encode_batch(pieces[i : i + batch], max_length=max_len)
        ids, attn = torch.from_numpy(enc["input_ids"]), torch.from_numpy(enc["attention_mask"])
        hidden = model(input_ids=ids, attention_mask=attn).last_hidden_state
        mask = attn.unsqueeze(-1).float()
        np.add.at(sums, owner[i : i + batch], (hidden * mask).sum(1).double().numpy())
        np.add.at(counts, owner[i : i + batch], attn.sum(1).double().numpy())
    return (sums / counts[:, None]).astype(np.float32)


def kmer_bag(seqs: list[str], k: int, stride: int = 1):
    """Each sequence's k-mer counts (sparse, one column per token id): the bag-of-k-mers features."""
    from scipy.sparse import csr_matrix

    enc = KmerTokenizer(k, stride).encode_batch(seqs)
    rows, pos = np.nonzero(enc["attention_mask"])
    cols = enc["input_ids"][rows, pos].astype(np.int64)  # duplicates add up: counts
    return csr_matrix((np.ones(len(cols), dtype=np.float32), (rows, cols)), shape=(len(seqs), vocab_size_for(k)))


def fit_score(train_x, train_y: np.ndarray, test_x, test_y: np.ndarray) -> dict[str, float]:
    """The probe: logistic regression on standardized features, scored on the test rows."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    # with_mean=False keeps the bag sparse; the dense embeddings are centred by the intercept anyway
    clf = make_pipeline(StandardScaler(with_mean=False), LogisticRegression(max_iter=2000))
    clf.fit(train_x, train_y)
    return gue.scores(test_y, clf.predict(test_x))


def _splits(gue_dir: str, name: str, max_train: int | None, max_eval: int | None, storage_options: dict | None):
    tr = gue.subsample(*gue.read_split(gue_dir, name, "train", storage_options), max_train, seed=0)
    te = gue.subsample(*gue.read_split(gue_dir, name, "test", storage_options), max_eval, seed=0)
    return tr, te


def linear_probe(model_dir: str, gue_dir: str, datasets: list[str], max_train: int = 2000, max_eval: int = 1000,
                 storage_options: dict | None = None) -> dict[str, float]:
    """Test score per dataset and their mean (``probe_score``), whole sequences: cheap enough to
    judge every sweep trial downstream, not by its own loss."""
    model_dir = node_checkpoint(model_dir, storage_options)  # a sweep trial's final may be on S3
    scores = {}
    for name in datasets:
        (trs, try_), (tes, tey) = _splits(gue_dir, name, max_train, max_eval, storage_options)
        got = fit_score(embed(model_dir, trs), try_, embed(model_dir, tes), tey)
        scores[f"probe_{name}"] = round(got[gue.REGISTRY[name].metric], 5)
    scores["probe_score"] = round(float(np.mean(list(scores.values()))), 5)
    return scores


def probe(checkpoint: str, gue_dir: str, tasks: str, out: str, max_train: int | None = None,
          max_eval: int | None = None, window_bp: int | None = None, threads: int | None = None,
          allow_untrained_positions: bool = False, storage_options: dict | None = None, log: Callable[[str], None] = print) -> dict[str, Any]:
    """``randommask probe``: the model's probe and the bag of k-mers' on each dataset, written to the
    JSON ``out`` with what produced it. ``window_bp`` defaults to the checkpoint's trained window
    when it is known (``data.window``; 0: whole sequences). ``threads``: torch's threads (one
    beside other work on the same cores is several times faster than oversubscribing them)."""
    for flag, value in (("--max-train", max_train), ("--max-eval", max_eval), ("--threads", threads)):
        if value is not None and value < 1:
            raise UserError(f"{flag} must be >= 1, got {value}")
    if window_bp is not None and window_bp < 0:
        raise UserError(f"--window-bp must be >= 0 (0: whole sequences), got {window_bp}")
    present, missing = gue.select(gue_dir, tasks, storage_options, log)
    if threads:
        torch.set_num_threads(threads)
    local = node_checkpoint(checkpoint, storage_options)
    tok = KmerTokenizer.from_pretrained(local)
    trained = trained_window(local, checkpoint, tok)
    window = trained.bp if window_bp is None else (window_bp or None)
    if window is not None:
        windows_of("", window, tok.k, tok.stride)  # refuses a window shorter than one k-mer, before any work
    splits = {name: _splits(gue_dir, name, max_train, max_eval, storage_options) for name in present}
    for name, ((trs, _), (tes, _)) in splits.items():  # what each dataset's pieces need, before any work
        longest = max(len(s) for s in trs + tes)
        need = min(tok.num_tokens(min(longest, window or longest)), trained.limit)
        what = f"GUE {name} (sequences up to {longest} bp" + (f", windows of {window} bp)" if window else ", whole)")
        trained.require(need, what, allow_untrained_positions, log)
    settings = {"gue_dir": gue_dir, "datasets": present, "max_train": max_train, "max_eval": max_eval,
                "window_bp": window}
    result: dict[str, Any] = {**settings, "k": tok.k, "chance": 0.0, "results": {},
                              "skipped": {name: "not in gue_dir (needs train.csv, dev.csv, test.csv)" for name in missing},
                              "provenance": provenance("probe", checkpoint, settings, storage_options)}
    for name in present:
        t0 = time.perf_counter()
        (trs, try_), (tes, tey) = splits[name]
        metric = gue.REGISTRY[name].metric
        model = fit_score(embed(local, trs, window_bp=window), try_, embed(local, tes, window_bp=window), tey)
        bag = fit_score(kmer_bag(trs, tok.k, tok.stride), try_, kmer_bag(tes, tok.k, tok.stride), tey)
        row = {"metric": metric, "model": round(model[metric], 5), "kmer_bag": round(bag[metric], 5),
               "model_accuracy": round(model["accuracy"], 5), "kmer_bag_accuracy": round(bag["accuracy"], 5),
               "n_train": len(trs), "n_test": len(tes), "seconds": round(time.perf_counter() - t0, 1)}
        result["results"][name] = row
        log(f"probe    {name}: {metric} {row['model']:.4f} (bag of {tok.k}-mers {row['kmer_bag']:.4f}, chance 0); "
            f"{len(trs)} train / {len(tes)} test rows, {row['seconds']:.0f} s")
    rows = result["results"].values()
    result["mean"] = {key: round(float(np.mean([r[key] for r in rows])), 5) for key in ("model", "kmer_bag")}
    storage.write_bytes(out, (json.dumps(result, indent=1) + "\n").encode(), storage_options)
    return result

