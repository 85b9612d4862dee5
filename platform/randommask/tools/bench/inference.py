"""Benchmarks of batch inference through Ray Data: ``embed`` against a plain transformers loop, and
``score-variants`` against a GPN-style loop of one forward pass per variant."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from randommask.data.tokenizer import KmerTokenizer
from randommask.tools.bench.common import hf_tokenizer, resolve_genome
from randommask.training.model import build_mlm


def _model_and_contig(tmp: str, path: Path, preset: str, k: int, seed: int):
    """A randomly initialised model saved under ``tmp`` (seeded), the genome, and its longest contig."""
    from randommask.inference import fasta as fasta_io

    ckpt = f"{tmp}/model"
    torch.manual_seed(seed)
    build_mlm(preset, k).save_pretrained(ckpt)
    KmerTokenizer(k).save_pretrained(ckpt)
    fa = fasta_io.open_fasta(str(path), log=lambda *_: None)
    chrom, length = max(fasta_io.contig_lengths(fa).items(), key=lambda kv: kv[1])
    return ckpt, fa, chrom, length


def bench_embed(genome: str | None = None, preset: str = "tiny", regions: int = 400, region_bp: int = 500,
                batch: int = 64, k: int = 6, seed: int = 0) -> dict:
    """Regions/s and tokens/s of ``randommask embed`` (Ray Data: genome reads and tokens in tasks, a
    pool of one encoder actor, Parquet out) against a plain ``transformers`` loop (pyfaidx reads,
    ``BertTokenizerFast`` k-mer text, ``BertModel`` mean of the k-mer tokens) on the same model,
    regions and machine; and how far apart their vectors are."""
    import pyarrow.parquet as pq
    import transformers
    from transformers import BertModel

    from randommask.inference.embed import embed

    path = resolve_genome(genome)
    quiet = lambda *_: None  # noqa: E731
    with tempfile.TemporaryDirectory() as tmp:
        ckpt, fa, chrom, length = _model_and_contig(tmp, path, preset, k, seed)
        rng = np.random.default_rng(seed)
        starts = np.sort(rng.integers(0, length - region_bp, size=regions))
        Path(f"{tmp}/r.bed").write_text("".join(f"{chrom}\t{s}\t{s + region_bp}\tr{i}\n" for i, s in enumerate(starts)))
        # One batch alone first: Ray and the pipeline's fixed cost (actor start, model load), so the
        # steady rate can be told from it.
        Path(f"{tmp}/one.bed").write_text("".join(Path(f"{tmp}/r.bed").read_text().splitlines(True)[:batch]))
        # The forward strand, as the baseline reads (unstranded regions are averaged over both by default).
        fixed_s = embed(ckpt, str(path), f"{tmp}/one.bed", f"{tmp}/one", batch_size=batch, strands="forward",
                        log=quiet)["seconds"]
        t0 = time.perf_counter()
        summary = embed(ckpt, str(path), f"{tmp}/r.bed", f"{tmp}/out", batch_size=batch, strands="forward", log=quiet)
        wall_s = time.perf_counter() - t0
        ours = pq.read_table(f"{tmp}/out").to_pandas().set_index("name")

        hf = hf_tokenizer(k)
        transformers.logging.set_verbosity_error()
        model = BertModel.from_pretrained(ckpt, add_pooling_layer=False).eval()
        threads = torch.get_num_threads()
        torch.set_num_threads(1)  # as our one actor (--cpus-per-actor 1)
        t0 = time.perf_counter()
        base = []
        with torch.no_grad():
            for i in range(0, regions, batch):
                seqs = [fa[chrom][int(s) : int(s) + region_bp] for s in starts[i : i + batch]]
                text = [" ".join(q[j : j + k] for j in range(len(q) - k + 1)) for q in seqs]
                enc = hf(text, padding=True, truncation=True, max_length=512, return_tensors="pt")
                hidden = model(**enc).last_hidden_state
                keep = enc["attention_mask"].clone()
                keep[:, 0] = 0
                keep[torch.arange(len(keep)), enc["attention_mask"].sum(1) - 1] = 0
                base.append(((hidden * keep[..., None]).sum(1) / keep.sum(1, keepdim=True)).numpy())
        base_s = time.perf_counter() - t0
        torch.set_num_threads(threads)
    base_vecs = np.concatenate(base)
    ours_vecs = np.stack([ours.loc[f"r{i}", "embedding"] for i in range(regions)])
    tokens = regions * (region_bp - k + 1)
    return {
        "bench": "embed", "preset": preset, "regions": regions, "region_bp": region_bp, "batch": batch,
        "genome": path.name, "ours_regions_per_s": round(regions / summary["seconds"], 1),
        "baseline_regions_per_s": round(regions / base_s, 1), "ratio": round(base_s / summary["seconds"], 2),
        "ours_tokens_per_s": round(tokens / summary["seconds"]), "baseline_tokens_per_s": round(tokens / base_s),
        "ours_fixed_s": round(fixed_s, 1),
        "ours_steady_regions_per_s": round((regions - batch) / max(summary["seconds"] - fixed_s, 1e-9), 1),
        "steady_ratio": round(base_s / regions * (regions - batch) / max(summary["seconds"] - fixed_s, 1e-9), 2),
        "ours_whole_command_s": round(wall_s, 1), "max_abs_diff": float(np.abs(ours_vecs - base_vecs).max()),
        "baseline": "plain loop: pyfaidx reads, BertTokenizerFast k-mer text, BertModel forward, mean of the "
                    "k-mer tokens; 1 torch thread, as our one actor",
    }


def _gpn_style_llrs(ckpt: str, fa, chrom: str, positions: np.ndarray, alts: list[str], window_bp: int, k: int) -> np.ndarray:
    """What a GPN-style script does: for each variant, the reference window centred on it as k-mer
    text through a BERT tokenizer, the tokens covering it masked, one forward pass, and the LLR from
    the masked tokens' log-probabilities of the k-mers with ALT and with REF there (the same
    geometric mean as ours)."""
    import transformers
    from transformers import BertForMaskedLM

    hf = hf_tokenizer(k)
    transformers.logging.set_verbosity_error()
    model = BertForMaskedLM.from_pretrained(ckpt).eval()
    n = len(fa[chrom])
    out = np.empty(len(positions))
    with torch.no_grad():
        for i, (p, alt) in enumerate(zip(positions, alts)):
            start = min(max(0, p - window_bp // 2), max(0, n - window_bp))
            seq = fa[chrom][start : start + window_bp].upper()
            q = p - start
            kmers = [seq[j : j + k] for j in range(len(seq) - k + 1)]
            enc = hf(" ".join(kmers), return_tensors="pt")
            cover = [j for j in range(len(kmers)) if j <= q < j + k]
            ids = enc["input_ids"].clone()
            ids[0, [1 + j for j in cover]] = hf.mask_token_id
            logp = torch.log_softmax(model(input_ids=ids, attention_mask=enc["attention_mask"]).logits[0], -1)
            score = {}
            for base in (seq[q], alt):
                edited = seq[:q] + base + seq[q + 1 :]
                cand = hf.convert_tokens_to_ids([edited[j : j + k] for j in cover])
                score[base] = float(logp[[1 + j for j in cover], cand].mean())
            out[i] = score[alt] - score[seq[q]]
    return out


def bench_score_variants(genome: str | None = None, preset: str = "tiny", variants: int = 10000,
                         window_bp: int = 511, batch: int = 64, k: int = 6, seed: int = 0) -> dict:
    """Variants/s of ``randommask score-variants`` (an indexed VCF read by Ray Data tasks, windows and
    tokens in tasks, one model actor, sorted Parquet out) against a GPN-style loop of one forward pass
    per variant (:func:`_gpn_style_llrs`), on the same model, SNVs, window and machine, forward
    strand both; and how far apart their LLRs are. ``ratio``: the whole command (Ray already up);
    ``steady_ratio``: past the command's fixed cost, measured as a one-batch command's pipeline time."""
    import pyarrow.parquet as pq
    import pysam

    from randommask.inference.variants import score_variants

    path = resolve_genome(genome)
    quiet = lambda *_: None  # noqa: E731
    other = {"A": "CGT", "C": "AGT", "G": "ACT", "T": "ACG"}
    header = "##fileformat=VCFv4.2\n#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO\n"
    with tempfile.TemporaryDirectory() as tmp:
        ckpt, fa, chrom, length = _model_and_contig(tmp, path, preset, k, seed)
        rng = np.random.default_rng(seed)
        seq = str(fa[chrom][:]).upper()
        drawn = rng.choice(np.arange(window_bp, length - window_bp), variants * 2, replace=False)
        clear = np.array([p for p in drawn if "N" not in seq[p - k : p + k]])  # scorable, away from contig ends
        positions = np.sort(clear[:variants])  # 0-based
        alts = [other[seq[p]][rng.integers(3)] for p in positions]
        lines = [f"{chrom}\t{p + 1}\tv{i}\t{seq[p]}\t{a}\t.\t.\t.\n" for i, (p, a) in enumerate(zip(positions, alts))]
        Path(f"{tmp}/v.vcf").write_text(header + "".join(lines))
        vcf = pysam.tabix_index(f"{tmp}/v.vcf", preset="vcf", force=True)
        Path(f"{tmp}/one.vcf").write_text(header + "".join(lines[:batch]))
        # One batch alone, twice: the first starts Ray and warms its workers (left out: a cluster is up
        # before a user's job); the second is the pipeline's fixed cost per command (actor start, model
        # load), so the steady rate can be told from it.
        for attempt in ("warm", "fixed"):
            one = score_variants(ckpt, str(path), f"{tmp}/one.vcf", f"{tmp}/{attempt}", window_bp=window_bp,
                                 strands="forward", batch_size=batch, log=quiet)
        fixed_s = one["seconds"]
        t0 = time.perf_counter()
        summary = score_variants(ckpt, str(path), vcf, f"{tmp}/out", window_bp=window_bp, strands="forward",
                                 batch_size=batch, log=quiet)
        wall_s = time.perf_counter() - t0  # the whole command: plan, provenance, pipeline, sort
        ours = {r["id"]: r["llr"] for r in pq.read_table(f"{tmp}/out", columns=["id", "llr"]).to_pylist()}
        threads = torch.get_num_threads()
        torch.set_num_threads(1)  # as our one actor (--cpus-per-actor 1)
        t0 = time.perf_counter()
        base = _gpn_style_llrs(ckpt, fa, chrom, positions, alts, window_bp, k)
        base_s = time.perf_counter() - t0
        torch.set_num_threads(threads)
    n = len(positions)
    ours_llr = np.array([ours[f"v{i}"] for i in range(n)])
    steady_s = max(summary["seconds"] - fixed_s, 1e-9)
    return {
        "bench": "score-variants", "preset": preset, "variants": n, "window_bp": window_bp, "batch": batch,
        "genome": path.name, "scored": summary["scored"],
        "ours_variants_per_s": round(n / wall_s, 1), "baseline_variants_per_s": round(n / base_s, 1),
        "ratio": round(base_s / wall_s, 2),
        "ours_whole_command_s": round(wall_s, 1), "ours_pipeline_s": round(summary["seconds"], 1),
        "ours_fixed_s": round(fixed_s, 1), "ours_steady_variants_per_s": round((n - batch) / steady_s, 1),
        "steady_ratio": round(base_s / n * (n - batch) / steady_s, 2), "baseline_s": round(base_s, 1),
        "max_abs_llr_diff": float(np.abs(ours_llr - base).max()),
        "baseline": "GPN-style loop: pyfaidx window, BertTokenizerFast k-mer text, the covering tokens masked, one "
                    "BertForMaskedLM forward per variant; 1 torch thread, as our one actor; forward strand both",
    }
