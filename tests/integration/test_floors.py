"""The floors a [MASK]-only loss is read against, and the evaluation windows: known entropies on
synthetic genomes, a copying model scoring at the floor on [MASK] inputs, evenly spread windows."""

import math

import numpy as np
import pytest
import torch
from torch import nn

from randommask.config import load_config
from randommask.data import validation_windows
from randommask.floors import compute_floors, context_free_floor, eval_reference, hidden_bases, overlap_reference
from randommask.model import STATS, SparseMLM, mlm_forward
from randommask.prepare import prepare
from randommask.tokenizer import MASK, NUM_SPECIAL
from randommask.train import eval_sets, run_floors

from conftest import REPO

TINY = REPO / "jobs" / "configs" / "pretrain-tiny.yaml"
LN4 = math.log(4)


def markov_genome(n: int, stay: float, seed: int) -> np.ndarray:
    """Codes 0-3 where the next base is the previous + 1 (mod 4) with probability ``stay`` + (1 - stay)/4."""
    rng = np.random.default_rng(seed)
    step = np.where(rng.random(n) < stay, 1, rng.integers(0, 4, n))
    return (np.cumsum(step) % 4).astype(np.uint8)


def markov_entropies(stay: float) -> tuple[float, float]:
    """Exact (per-step conditional entropy h, H(base | one base each side)) of markov_genome's chain."""
    p = np.full(4, (1 - stay) / 4)
    p[1] += stay
    h = float(-(p * np.log(p)).sum())
    two = np.array([sum(p[a] * p[(d - a) % 4] for a in range(4)) for d in range(4)])  # two-step law
    return h, 2 * h - float(-(two * np.log(two)).sum())


def test_floors_of_synthetic_genomes_with_known_entropy():
    uniform = np.random.default_rng(0).integers(0, 4, 2_000_000).astype(np.uint8)
    assert context_free_floor([uniform[:1_900_000]], [uniform[1_900_000:]], 6) == pytest.approx(6 * LN4, abs=0.03)
    assert overlap_reference([uniform], flank=3) == pytest.approx(LN4, abs=0.01)
    # A Markov chain: k-mer entropy ln 4 + (k - 1) h, and with one base of flank H(X0 | X-1, X1) exactly.
    chain = markov_genome(2_000_000, 0.7, 1)
    h, h_flanked = markov_entropies(0.7)
    assert context_free_floor([chain[:1_900_000]], [chain[1_900_000:]], 6) == pytest.approx(LN4 + 5 * h, abs=0.03)
    assert overlap_reference([chain], flank=1) == pytest.approx(h_flanked, abs=0.01)
    # More flank cannot help a first-order chain: the plug-in estimate stays at the exact value.
    assert overlap_reference([chain], flank=3) == pytest.approx(h_flanked, abs=0.02)
    assert h_flanked < h < LN4


def test_hidden_bases_of_a_span_of_k_is_one_and_a_kept_token_shows_it():
    k = 6
    ids = torch.arange(NUM_SPECIAL, NUM_SPECIAL + 30)[None].clone()  # any k-mer ids: only visibility matters
    labels = torch.full_like(ids, -100)
    span = slice(10, 16)  # six tokens: bases 9..19 covered, base 14 shown by no visible token
    labels[0, span] = ids[0, span]
    inputs = ids.clone()
    inputs[0, span] = MASK
    h = hidden_bases(inputs, labels, k)
    assert h[0, span].tolist() == [1] * 6 and h[0, :10].sum() == 0
    kept = inputs.clone()
    kept[0, 12] = ids[0, 12]  # a kept token inside the span shows every base of its k-mer
    assert hidden_bases(kept, labels, k)[0, span].tolist() == [0] * 6
    wide = labels.clone()
    wide[0, 8:20] = ids[0, 8:20]  # a span of 2k = 12 tokens hides 7 bases
    wide_in = torch.where(wide != -100, MASK, ids)
    assert hidden_bases(wide_in, wide, k)[0, 8:20].tolist() == [1, 2, 3, 4, 5, 6, 6, 5, 4, 3, 2, 1]
    assert eval_reference(inputs, labels, k, 1, 1.3) == pytest.approx(1.3)


@pytest.fixture(scope="module")
def synthetic_prepared(ray_local, tmp_path_factory):
    """A uniform random genome in two records, prepared through Ray as users do."""
    from test_data import write_fasta

    tmp = tmp_path_factory.mktemp("synthetic")
    rng = np.random.default_rng(3)
    records = {f"chr{i}": "".join(np.array(list("ATCG"))[rng.integers(0, 4, 600_000)]) for i in (1, 2)}
    fasta = write_fasta(tmp / "uniform.fa", records)
    out = tmp / "prepared"
    prepare([str(fasta)], str(out), val_fraction=0.05, show_progress=False)
    return str(out)


@pytest.mark.ray
def test_compute_floors_reads_the_prepared_splits(synthetic_prepared):
    f = compute_floors(synthetic_prepared, 6)
    assert f["context_free"] == pytest.approx(6 * LN4, abs=0.05)
    assert f["overlap_per_base"] == pytest.approx(LN4, abs=0.01)
    assert f["validation_bases"] == pytest.approx(60_000, rel=0.1) and f["train_bases_used"] > 1_000_000
    capped = compute_floors(synthetic_prepared, 3, max_train_bases=200_000)
    assert capped["train_bases_used"] <= 200_000 + (1 << 20) and capped["context_free"] == pytest.approx(3 * LN4, abs=0.02)


@pytest.mark.ray
def test_evaluation_windows_are_spread_evenly_over_every_validation_region(synthetic_prepared):
    every = validation_windows(synthetic_prepared, 128, limit=10**9)
    some = validation_windows(synthetic_prepared, 128, limit=50)
    pick = np.unique(np.linspace(0, len(every) - 1, 50).round().astype(int))
    assert len(every) > 300 and np.array_equal(some, every[pick])
    assert np.array_equal(some, validation_windows(synthetic_prepared, 128, limit=50))  # the same every time
    assert not np.array_equal(some, every[:50])  # not the first windows in genome order
    # both records' validation blocks are represented (the first 50 windows would all be in chr1)
    from randommask.data import build_plan

    plan = build_plan(synthetic_prepared, "validation", 128, windows_per_block=1, blocks_per_chunk=1 << 62)
    genome_pos = np.array(plan.chunks[0]["global_start"])[pick]
    assert genome_pos.min() < 600_000 <= genome_pos.max()


class CopyOrFrequencies(nn.Module):
    """A context-free model that copies any visible k-mer: the all-label loss rewards it, the
    [MASK]-only loss must not. Plugged into the real sparse loss through the .bert/.cls interface."""

    def __init__(self, log_freq: torch.Tensor) -> None:
        super().__init__()
        self.log_freq = log_freq
        self.bert = self

    def forward(self, input_ids, attention_mask=None):
        return type("Out", (), {"last_hidden_state": input_ids[..., None].float()})

    def cls(self, hidden):
        # A visible k-mer at a labelled position is kept or random, half and half under 80/10/10:
        # bet half on it and spread the rest by frequency. [MASK]: the frequencies alone.
        ids = hidden[:, 0].long()
        probs = self.log_freq.exp().expand(len(ids), -1).clone()
        copy = ids >= NUM_SPECIAL
        probs[copy] *= 0.5
        probs[copy, ids[copy]] += 0.5
        return probs.log()


@pytest.mark.ray
@pytest.mark.genome
def test_a_model_that_copies_kept_tokens_scores_at_the_floor_on_mask_inputs(prepared):
    cfg = load_config(TINY, [f"data.prepared={prepared}", "run.eval_windows=100000"])
    floors = run_floors(cfg)
    assert floors["context_free"] == pytest.approx(8.17, abs=0.03)  # E. coli 536 6-mers
    assert 1.1 < floors["eval_span_k_overlap"] < floors["overlap_per_base"] < 1.4
    assert floors["eval_span_2k_overlap"] > 2 * floors["eval_span_k_overlap"]
    from randommask.floors import split_codes, _kmer_counts

    counts = torch.tensor(_kmer_counts(split_codes(prepared, "train"), 6), dtype=torch.float64) + 1
    log_freq = torch.full((4**6 + NUM_SPECIAL,), -60.0)
    log_freq[NUM_SPECIAL:] = (counts / counts.sum()).log().float()
    model = SparseMLM(CopyOrFrequencies(log_freq))
    inputs, labels = eval_sets(cfg)["span_k"]
    loss, stats = mlm_forward(model, inputs, labels)
    s = dict(zip(STATS, stats.tolist()))
    mask_loss = s["mask_loss_sum"] / s["mask_selected"]
    assert s["mask_selected"] > 4_000  # every validation window of 128 bp
    assert mask_loss == pytest.approx(floors["context_free"], abs=0.05)  # at the floor, not below
    # the all-label loss is fooled by the copies: 0.8 H + 0.1 ln 2 + 0.1 (ln 2 + H), 7.49 for E. coli
    h = floors["context_free"]
    assert loss.item() == pytest.approx(0.9 * h + 0.2 * math.log(2), abs=0.1) and loss.item() < h - 0.6
