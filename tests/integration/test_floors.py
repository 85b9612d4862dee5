"""The floors of prepared genomes and the evaluation windows: known entropies of a synthetic genome
prepared through Ray, evenly spread windows, a copying model scoring at the floor on [MASK] inputs (the
floors on in-memory synthetic genomes are in tests/unit/test_floors.py)."""

import gzip
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from conftest import ECOLI, TINY_CONFIG, random_dna, write_fasta
from randommask.data.floors import (
    BASE_TABLE_FLANKS,
    base_table_loss,
    compute_floors,
    context_free_floor,
    geometry_tables,
    table_keys,
)
from randommask.data.prepare import prepare
from randommask.data.stream import build_plan, validation_windows
from randommask.data.tokenizer import NUM_SPECIAL
from randommask.training.baseloss import per_base_sums
from randommask.training.config import load_config
from randommask.training.driver import run_floors
from randommask.training.model import STATS, SparseMLM, mlm_forward
from randommask.training.validation import eval_sets

LN4 = math.log(4)


@pytest.fixture(scope="module")
def synthetic_prepared(ray_local, tmp_path_factory):
    """A uniform random genome in two records, prepared through Ray as users do."""
    tmp = tmp_path_factory.mktemp("synthetic")
    rng = np.random.default_rng(3)
    records = {f"chr{i}": random_dna(600_000, rng) for i in (1, 2)}
    fasta = write_fasta(tmp / "uniform.fa", records)
    out = tmp / "prepared"
    prepare([str(fasta)], str(out), val_fraction=0.05, show_progress=False)
    return str(out)


def fasta_splits(fasta: Path, prepared: str) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """(train, validation) codes read independently of the prepared shards: the FASTA's records (by
    the manifest's names), cut at the manifest's validation intervals, which must not overlap; every
    base is in exactly one split."""
    manifest = json.loads((Path(prepared) / "manifest.json").read_text())
    opener = gzip.open if fasta.suffix == ".gz" else open
    with opener(fasta, "rt") as f:
        text = f.read().split(">")[1:]
    code = np.full(256, 4, dtype=np.uint8)
    for i, c in enumerate("ATCG"):
        code[ord(c)] = code[ord(c.lower())] = i
    by_name = {r.split(None, 1)[0]: code[np.frombuffer("".join(r.splitlines()[1:]).encode(), dtype=np.uint8)]
               for r in text}
    genome = [by_name[r["name"]] for r in manifest["records"]]
    train, validation = [], []
    for i, codes in enumerate(genome):
        cuts = sorted((v["start"], v["end"]) for v in manifest["validation"] if v["record"] == i)
        assert all(e1 <= s2 for (_, e1), (s2, _) in zip(cuts, cuts[1:])), cuts  # disjoint blocks
        edges = [0] + [x for cut in cuts for x in cut] + [len(codes)]
        train += [codes[a:b] for a, b in zip(edges[::2], edges[1::2]) if b > a]
        validation += [codes[a:b] for a, b in cuts]
    assert sum(map(len, train)) + sum(map(len, validation)) == sum(map(len, genome))
    return train, validation


@pytest.mark.ray
def test_compute_floors_reads_the_prepared_splits(synthetic_prepared):
    f = compute_floors(synthetic_prepared, 6)
    # exactly the training bases' counts scored on the validation bases (the functions are pinned to
    # plain counting in tests/unit/test_floors.py); counted with the validation split, they would move
    train, validation = fasta_splits(Path(synthetic_prepared).parent / "uniform.fa", synthetic_prepared)
    assert f["context_free"] == round(context_free_floor(train, validation, 6), 4)
    assert f["base_table"] == {str(m): round(base_table_loss(train, validation, m), 4) for m in BASE_TABLE_FLANKS}
    assert f["context_free"] - context_free_floor(train + validation, validation, 6) > 0.002  # 0.0034
    assert f["base_table"]["4"] - base_table_loss(train + validation, validation, 4) > 0.1  # 0.15
    assert f["context_free"] == pytest.approx(6 * LN4, abs=0.05)
    assert f["overlap_per_base"] == pytest.approx(LN4, abs=0.01)
    assert f["validation_bases"] == pytest.approx(60_000, rel=0.1) and f["train_bases_used"] > 1_000_000
    capped = compute_floors(synthetic_prepared, 3, max_train_bases=200_000)
    assert capped["train_bases_used"] <= 200_000 + (1 << 20) and capped["context_free"] == pytest.approx(3 * LN4, abs=0.02)


@pytest.mark.ray
def test_the_geometry_tables_count_the_training_split_only(synthetic_prepared):
    cfg = load_config(TINY_CONFIG, [f"data.prepared={synthetic_prepared}", "run.eval_windows=64"])
    sets = eval_sets(cfg)
    floors = compute_floors(synthetic_prepared, 6, eval_sets=sets)
    train, validation = fasta_splits(Path(synthetic_prepared).parent / "uniform.fa", synthetic_prepared)
    want = geometry_tables(train, sets, 6)
    for name in sets:
        for key in table_keys(name):
            assert floors[key] == want[key], key
        assert set(floors[table_keys(name)[0]]) == {str(m) for m in range(1, 9)}
        assert floors[table_keys(name)[1]] == pytest.approx(LN4, abs=0.01)  # uniform random DNA: chance
    # counted with the validation split (where the evaluation windows are), the tables would know
    # each hidden base: a leak moves the line
    leaked = geometry_tables(train + validation, sets, 6)
    assert leaked["best_counting_span_k"] < floors["best_counting_span_k"] - 1e-4


@pytest.mark.ray
def test_evaluation_windows_are_spread_evenly_over_every_validation_region(synthetic_prepared):
    data = {"prepared": synthetic_prepared, "window_bp": 128}
    every = validation_windows(data, limit=10**9)
    some = validation_windows(data, limit=50)
    pick = np.unique(np.linspace(0, len(every) - 1, 50).round().astype(int))
    assert len(every) > 300 and np.array_equal(some, every[pick])
    assert np.array_equal(some, validation_windows(data, limit=50))  # the same every time
    assert not np.array_equal(some, every[:50])  # not the first windows in genome order
    # both records' validation blocks are represented (the first 50 windows would all be in chr1)
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
    cfg = load_config(TINY_CONFIG, [f"data.prepared={prepared}", "run.eval_windows=100000"])
    floors = run_floors(cfg)
    assert floors["context_free"] == pytest.approx(8.17, abs=0.03)  # E. coli 536 6-mers
    assert 1.1 < floors["eval_span_k_overlap"] < floors["overlap_per_base"] < 1.4
    assert floors["eval_span_2k_overlap"] > 2 * floors["eval_span_k_overlap"]
    from randommask.data.floors import kmer_counts, split_codes

    counts = torch.tensor(kmer_counts(split_codes(prepared, "train"), 6), dtype=torch.float64) + 1
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
    # The per-base references: count tables of the flanks a little under chance on E. coli, the best
    # one (3-4 bases each side) near 1.30 nats (1.26 counted with the validation split: a leak fails
    # the bound); a perfect overlap reader that knows no DNA pays ln 4 per hidden base.
    tables = floors["base_table"]
    assert set(tables) == {"1", "2", "3", "4"} and 1.28 < min(tables.values()) < tables["1"] < math.log(4)
    # exactly the training split's tables; counted with the validation split (1%), the best one would
    # fall by about 0.04 nats
    train, validation = fasta_splits(ECOLI, prepared)
    for m in BASE_TABLE_FLANKS:
        assert tables[str(m)] == pytest.approx(base_table_loss(train, validation, m), abs=2e-4), m
    leaked = min(base_table_loss(train + validation, validation, m) for m in BASE_TABLE_FLANKS)
    assert leaked < min(tables.values()) - 0.02
    # In the evaluation's own geometry (edges, hidden neighbours) counting does worse than the plain
    # table, which sees 4 bases on each side of every base; the best m is the line.
    for name in ("span_k", "span_2k"):
        geometry, best = floors[f"base_table_{name}"], floors[f"best_counting_{name}"]
        assert set(geometry) == {str(m) for m in range(1, 9)} and best == min(geometry.values())
        assert min(tables.values()) < best < geometry["1"] < LN4
    assert floors["overlap_only_span_k"] > floors["eval_span_k_overlap"] and floors["overlap_only_span_2k"] > 2 * LN4
    assert floors["overlap_only_span_k"] == pytest.approx(floors["eval_span_k_overlap"] * LN4 / floors["overlap_per_base"],
                                                          rel=1e-3)
    # The k-mer frequency model on the per-base loss: restricted to the visible flanks it is a count
    # table, between chance and the best table; so "below the best table" is knowledge beyond counting.
    for name in ("span_k", "span_2k"):
        inputs, labels = eval_sets(cfg)[name]
        n = int((labels != -100).sum())
        total, bases = per_base_sums(log_freq.double().expand(n, -1), inputs, labels, 6)
        assert bases > 1000 and floors[f"best_counting_{name}"] < total / bases < LN4, (name, total / bases)
