"""`randommask analyze`: the attention and embedding numbers on constructed cases with known answers
(the report comparing two real pretraining runs is in tests/integration/test_analysis.py)."""

import json

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from transformers import AttentionInterface

from randommask import KmerTokenizer
from randommask.errors import UserError
from randommask.evaluation.analysis import (
    attention_concentration,
    attention_row_stats,
    finetune_comparison,
    kmer_codes,
    kmer_embedding_stats,
    loss_dynamics,
)
from randommask.training.model import build_mlm


# ---- attention ----------------------------------------------------------------------------------
@settings(max_examples=40, deadline=None)
@given(st.integers(1, 3), st.integers(1, 3), st.integers(2, 12), st.floats(0.1, 30), st.integers(0, 2**31 - 1))
def test_normalized_entropy_lies_in_the_unit_interval(batch, heads, length, temperature, seed):
    g = torch.Generator().manual_seed(seed)
    mask = torch.ones(batch, length)
    for b in range(batch):  # padded rows: keys beyond a random length are masked out
        mask[b, int(torch.randint(1, length + 1, (1,), generator=g)):] = 0
    scores = torch.randn(batch, heads, length, length, generator=g) * temperature
    attn = torch.softmax(scores.masked_fill(mask[:, None, None, :] == 0, float("-inf")), dim=-1)
    ent, mx, rows = attention_row_stats(attn, mask)
    assert rows == mask.sum()
    assert torch.all(ent >= -1e-5) and torch.all(ent <= rows * (1 + 1e-5))
    assert torch.all(mx <= rows + 1e-5) and torch.all(mx > 0)


def _windows(n=6, length=40, pad_from=28):
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(5, 4101, (n, length), generator=g)
    ids[:, 0], ids[:, -1] = 2, 3
    mask = torch.ones_like(ids)
    mask[: n // 2, pad_from:] = 0  # half the windows padded: uniformity is over their real tokens only
    return ids, mask


def test_attention_forced_uniform_reads_one():
    model = build_mlm("tiny")
    model.set_attn_implementation("eager")
    for layer in model.bert.encoder.layer:  # zero queries and keys: every score equal, softmax uniform
        for lin in (layer.attention.self.query, layer.attention.self.key):
            torch.nn.init.zeros_(lin.weight)
            torch.nn.init.zeros_(lin.bias)
    ids, mask = _windows()
    r = attention_concentration(model, ids, mask, batch_size=4)
    assert r["entropy"].shape == (2, 2)  # tiny: 2 layers x 2 heads
    np.testing.assert_allclose(r["entropy"], 1.0, atol=1e-5)
    expected_max = (3 * 40 * (1 / 40) + 3 * 28 * (1 / 28)) / (3 * 40 + 3 * 28)
    np.testing.assert_allclose(r["max_weight"], expected_max, atol=1e-6)


def _one_token_attention(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
    """Every query puts all its weight on the first token ([CLS])."""
    w = torch.zeros(*query.shape[:3], key.shape[2], dtype=query.dtype, device=query.device)
    w[..., 0] = 1.0
    return torch.matmul(w, value).transpose(1, 2).contiguous(), w


def test_attention_forced_onto_one_token_reads_zero():
    AttentionInterface.register("randommask_test_one_token", _one_token_attention)
    model = build_mlm("tiny")
    model.set_attn_implementation("randommask_test_one_token")
    ids, mask = _windows()
    r = attention_concentration(model, ids, mask, batch_size=4)
    np.testing.assert_allclose(r["entropy"], 0.0, atol=1e-6)
    np.testing.assert_allclose(r["max_weight"], 1.0)


def test_a_trained_like_model_sits_between():
    torch.manual_seed(0)
    model = build_mlm("tiny")
    model.set_attn_implementation("eager")
    for layer in model.bert.encoder.layer:  # sharper attention than the near-uniform initialisation
        layer.attention.self.query.weight.data *= 40
    ids, mask = _windows()
    r = attention_concentration(model, ids, mask, batch_size=4)
    assert np.all((r["entropy"] > 0.05) & (r["entropy"] < 0.999))


# ---- embeddings -----------------------------------------------------------------------------------
def test_kmer_codes_follow_the_tokenizer_vocabulary():
    tok = KmerTokenizer(6)
    codes = kmer_codes(6)
    for i in (0, 1, 777, 4095):
        kmer = "".join("ATCG"[c] for c in codes[i])
        assert tok.encode(kmer) == [2, 5 + i, 3]


def test_embedding_scores_separate_a_clustered_embedding_from_a_random_one():
    rng = np.random.default_rng(0)
    central = kmer_codes(6)[:, 3]
    clustered = rng.normal(size=(4, 32))[central] * 2 + rng.normal(size=(4096, 32))
    random = rng.normal(size=(4096, 32))
    c, r = kmer_embedding_stats(clustered, 6), kmer_embedding_stats(random, 6)
    assert c["silhouette_central"] > 0.3 and abs(r["silhouette_central"]) < 0.05
    assert c["knn_central"] > 0.9 and abs(r["knn_central"] - 0.25) < 0.03
    assert abs(c["knn_by_position"][0] - 0.25) < 0.03  # only the central base was put in
    angle = (kmer_codes(6) >= 2).mean(axis=1) * np.pi / 2  # GC content as a direction (cosine neighbours)
    gc_sorted = np.hstack([np.stack([np.cos(angle), np.sin(angle)], axis=1) * 5, rng.normal(size=(4096, 30)) * 0.3])
    assert kmer_embedding_stats(gc_sorted, 6)["knn_gc_r2"] > 0.8 and r["knn_gc_r2"] < 0.05
    assert r["effective_rank"] > c["effective_rank"] and r["pca"]["xy"].shape == (4096, 2)
    with pytest.raises(ValueError, match="4096"):
        kmer_embedding_stats(random[:100], 6)


# ---- loss dynamics and fine-tuning tables ---------------------------------------------------------
def test_loss_dynamics_tells_an_early_collapse_from_steady_learning():
    steps = range(5, 1001, 5)
    collapse = [{"step": s, "loss": 1 + 7 * np.exp(-s / 20), "span_max": 6} for s in steps]
    steady = [{"step": s, "loss": 8 - 6 * s / 1000, "span_max": 6 + 2 * (s > 500)} for s in steps]
    steady.append({"step": 1000, "eval_span_k_loss": 2.5, "eval_span_2k_loss": 3.0})
    c, s = loss_dynamics(collapse), loss_dynamics(steady)
    assert c["early_drop_fraction"] > 0.95 and 0.05 < s["early_drop_fraction"] < 0.15
    assert c["phase_jumps"] == [] and [j["step"] for j in s["phase_jumps"]] == [505]
    assert s["final_eval_span_k_loss"] == 2.5 and s["steps"] == 1000 and s["loss_key"] == "loss"
    assert loss_dynamics([]) == {}


def test_loss_dynamics_reads_mask_only_losses_between_the_floors():
    history = [{"step": s, "loss": 5.0, "mask_loss": 8.0 - s / 1000, "mask_acc": 0.1, "span_max": 6}
               for s in range(100, 4001, 100)]
    history[-1].update(eval_span_k_mask_loss=4.5, eval_span_k_loss=3.0, eval_span_2k_mask_loss=6.0)
    floors = {"k": 6, "context_free": 8.0, "eval_span_k_overlap": 1.5}
    d = loss_dynamics(history, floors)
    assert d["loss_key"] == "mask_loss" and d["final_loss"] == pytest.approx(4.0 + 0.15, abs=0.1)
    assert d["final_eval_span_k_mask_loss"] == 4.5 and d["final_eval_span_k_loss"] == 3.0
    assert d["floor_context_free"] == 8.0 and d["below_context_free"] == pytest.approx(3.5)
    assert d["collapse_progress"] == pytest.approx(3.5 / 6.5)  # 0 at the context-free floor, 1 at the reference
    assert "collapse_progress" not in loss_dynamics(history)


def test_finetune_comparison_table(tmp_path):
    def results(name, scores):
        d = tmp_path / name
        d.mkdir()
        rows = [{"dataset": ds, "metric": "mcc", "score_mean": m, "score_std": 0.01, "seeds_ok": 3}
                for ds, m in scores.items()]
        (d / "results.json").write_text(json.dumps({"datasets": rows}))
        return str(d)

    a = results("overlapping", {"tf/0": 0.6, "prom/prom_core_all": 0.5, "mouse/0": 0.4})
    b = results("non-overlapping", {"tf/0": 0.55, "prom/prom_core_all": 0.52})
    r = finetune_comparison(a, b)
    assert r["labels"] == ["overlapping", "non-overlapping"]
    assert [x["dataset"] for x in r["rows"]] == ["tf/0", "prom/prom_core_all"]
    assert r["a_better"] == 1 and r["b_better"] == 1 and r["mean_difference"] == pytest.approx(0.015)
    with pytest.raises(UserError, match="no results.json"):
        finetune_comparison(a, str(tmp_path / "missing"))
