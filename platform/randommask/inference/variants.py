"""``randommask score-variants``: zero-shot masked-LM scores of SNVs, as Ray Data batch inference.

The score of a variant at position p (docs/inference.md derives it):

With k-mer tokens at stride s, the tokens that cover p are M = {j : j*s <= p < j*s + k}, in a
window of the reference centred on p. All of them are set to [MASK], which hides base p. For k-mer
tokens of stride 1, no other base is hidden, since each flank base is also in an unmasked token.
For base b in {A, C, G, T}, kappa_j(b) is the k-mer at token j with b at p and the reference
elsewhere. The model gives log P_j(kappa_j(b)) at each masked token, over the four k-mers consistent
with the visible flanks. The |M| tokens are combined as the geometric mean of their predictions:

    score(b) = (1/|M|) * sum over j in M of log P_j(kappa_j(b))
    P(b)     = exp(score(b)) / sum_b' exp(score(b'))
    llr      = log P(alt) - log P(ref) = score(alt) - score(ref)

A product of the |M| predictions would count the same context |M| times. On held-out E. coli, its
mean log P(ref) was below chance, while the geometric mean's was above it (docs/inference.md). For
stride k there is one token, and this is the usual masked-marginal score over the four k-mers that
differ only at p. The output also has p_ref = P(ref), p_alt = P(alt), and the entropy of P in nats.
"""

from __future__ import annotations

from collections import Counter
from typing import Any, Callable

import numpy as np

from randommask.common.checkpoints import provenance
from randommask.errors import UserError
from randommask.inference import fasta as fasta_io
from randommask.inference import provenance as prov_io
from randommask.inference import runtime, sorted_out
from randommask.inference.alleles import REASONS, contig_aliases, reason_kind
from randommask.inference.centre import (
    STRANDS,
    base_log_probs,
    centred_window,
    combine_strands,
    masked_windows,
    strand_windows,
)
from randommask.inference.variant_inputs import allele_batches, allele_row, plan_vcf, read_table, unit_rows
from randommask.inference.vcf_out import write_vcf

KEY = ["chrom", "pos", "id", "ref", "alt"]


def windows(batch: dict[str, np.ndarray], fasta: str, k: int, stride: int, window_bp: int, strands: str = "both",
            storage_options: dict | None = None) -> dict[str, np.ndarray]:
    """Ray Data task: for each allele not already refused, the masked window of each strand (token
    ids, (S, L)) and the ids of the four candidate k-mers at its masked tokens ((S, M, 4), by base
    code); or the reason it cannot be scored. The window is centred on the normalized position
    (``window_bp`` odd), clipped at contig ends. Contig names match the FASTA's with or without
    ``chr`` (``alleles.contig_aliases``)."""
    from randommask.data.tokenizer import UNK, KmerTokenizer, codes_from_bytes

    fa = fasta_io.open_fasta(fasta, storage_options, log=lambda *_: None)
    lengths = fasta_io.contig_lengths(fa)
    tok = KmerTokenizer(k, stride)
    aliases: dict[str, str] = {}
    ids_col, cand_col, errors = [], [], []
    for chrom, pos, ref, error in zip(batch["chrom"], batch["norm_pos"], batch["norm_ref"], batch["error"]):
        chrom, p, ref, error = str(chrom), int(pos) - 1, str(ref), str(error)
        if chrom not in lengths and chrom not in aliases:
            aliases[chrom] = contig_aliases([chrom], lengths).get(chrom, chrom)
        contig = aliases.get(chrom, chrom)
        ids, cands = np.zeros((1, 0), np.int32), np.zeros((1, 0, 4), np.int32)
        if error:
            pass  # refused when read (indel, MNV, symbolic, non-ACGT)
        elif contig not in lengths:
            error = f"contig: {chrom} is not in the FASTA"
        elif p >= lengths[contig]:
            error = f"position: {p + 1} is past the end of {contig} ({lengths[contig]} bp)"
        else:
            n = lengths[contig]
            start = min(max(0, p - window_bp // 2), max(0, n - window_bp))
            seq = fa[contig][start : min(n, start + window_bp)]
            q = p - start
            if seq[q].upper() != ref:
                error = f"REF mismatch: REF {ref} does not match the genome ({seq[q].upper()}) at {contig}:{p + 1}"
            else:
                codes = codes_from_bytes(seq.encode("latin-1"))[None, :]
                parts = [masked_windows(c, at, tok) for c, at in strand_windows(codes, q, strands)]
                cands = np.concatenate([c for _, c in parts])
                if (cands == UNK).any():  # an N (or other letter) in a k-mer that covers p
                    error = f"N nearby: an N within {k - 1} bases of {contig}:{p + 1}; no k-mer to score"
                else:
                    ids = np.concatenate([i for i, _ in parts]).astype(np.int32)
        ids_col.append(ids)
        cand_col.append(cands)
        errors.append(error)
    return {**batch, "ids": runtime.object_column(ids_col), "candidates": runtime.object_column(cand_col),
            "error": np.array(errors, dtype=object)}


class Scorer:
    """Ray Data actor: the masked-LM, loaded once; scores each variant from its masked windows."""

    def __init__(self, checkpoint: str, gpu: bool, threads: int | None, storage_options: dict | None = None,
                 provenance: dict | None = None) -> None:
        self.model, _, self.device = runtime.load_model(checkpoint, "mlm", gpu, threads, storage_options)
        self.provenance = provenance

    def __call__(self, batch: dict[str, np.ndarray]):
        import pyarrow as pa
        import torch

        from randommask.data.tokenizer import CODE_OF_BYTE, MASK, PAD
        from randommask.training.model import autocast

        n = len(batch["error"])
        llr, p_ref, p_alt, entropy = (np.full(n, np.nan) for _ in range(4))
        ok = [i for i in range(n) if not batch["error"][i]]
        if ok:
            windows = [w for i in ok for w in batch["ids"][i]]  # each variant's strands, in order
            ids = torch.full((len(windows), max(len(w) for w in windows)), PAD, dtype=torch.long)
            for row, w in enumerate(windows):
                ids[row, : len(w)] = torch.from_numpy(w.astype(np.int64))
            with torch.no_grad(), autocast(self.device):
                logp = runtime.masked_log_probs(self.model, ids.to(self.device),
                                                (ids != PAD).long().to(self.device)).cpu().numpy()
            row = 0  # logp's rows: each window's covering tokens, window by window, in token order
            for i in ok:
                per_strand = []
                for w, cands in zip(batch["ids"][i], batch["candidates"][i]):
                    m = int((w == MASK).sum())
                    per_strand.append(base_log_probs(logp[row : row + m][np.arange(m)[:, None], cands]))
                    row += m
                log_p = combine_strands(per_strand[0], per_strand[1] if len(per_strand) > 1 else None)
                r, a = CODE_OF_BYTE[ord(str(batch["norm_ref"][i]))], CODE_OF_BYTE[ord(str(batch["norm_alt"][i]))]
                llr[i] = log_p[a] - log_p[r]
                p_ref[i], p_alt[i] = np.exp(log_p[r]), np.exp(log_p[a])
                entropy[i] = float(-(np.exp(log_p) * log_p).sum())

        def nullable(x):
            return pa.array([None if np.isnan(v) else float(v) for v in x], type=pa.float64())

        table = pa.table({"chrom": pa.array([str(c) for c in batch["chrom"]]),
                          "pos": pa.array(batch["pos"].astype(np.int64)), "id": pa.array([str(v) for v in batch["id"]]),
                          "ref": pa.array([str(v) for v in batch["ref"]]), "alt": pa.array([str(v) for v in batch["alt"]]),
                          "norm_pos": pa.array(batch["norm_pos"].astype(np.int64)),
                          "norm_ref": pa.array([str(v) for v in batch["norm_ref"]]),
                          "norm_alt": pa.array([str(v) for v in batch["norm_alt"]]),
                          "llr": nullable(llr), "p_ref": nullable(p_ref), "p_alt": nullable(p_alt),
                          "entropy": nullable(entropy), "error": pa.array([str(e) for e in batch["error"]])})
        return prov_io.with_metadata(table, self.provenance) if self.provenance else table


def score_variants(checkpoint: str, fasta: str, vcf: str | None, out: str, window_bp: int | None = None,
                   strands: str = "both", batch_size: int = 64, overwrite: bool = False, actors: int = 1,
                   cpus_per_actor: float = 1.0, gpus_per_actor: float = 0.0, variants: str | None = None,
                   regions: list[str] | None = None, out_vcf: str | None = None, allow_untrained_positions: bool = False,
                   storage_options: dict | None = None, log: Callable[[str], None] = print) -> dict[str, Any]:
    """One row per ALT allele of the VCF (or the ``variants`` table) in Parquet files under ``out``,
    sorted in genome order: scored where it is an SNV of A/C/G/T after trimming, else with its reason
    in ``error``; with ``out_vcf``, the records as an annotated VCF too. Returns a summary."""
    for flag, value in (("--batch-size", batch_size), ("--actors", actors)):
        if value < 1:
            raise UserError(f"{flag} must be >= 1, got {value}")
    tok, config, trained = runtime.model_limits(checkpoint, storage_options)
    max_bp = tok.bases_for(config.max_position_embeddings)  # the model's positions, in bases
    if strands not in STRANDS:
        raise UserError(f"--strands {strands}: choose one of {', '.join(STRANDS)}")
    window = centred_window(min(window_bp or trained.default_bp(tok), max_bp))
    if window < tok.k:
        raise UserError(f"--window-bp {window_bp}: shorter than one {tok.k}-mer")
    trained.require(tok.num_tokens(window), f"--window-bp {window_bp} (windows of {window} bp)" if window_bp else f"windows of {window} bp",
                    allow_untrained_positions, log)
    fa = fasta_io.open_fasta(fasta, storage_options, log)  # index it once, here, before the workers read it
    if (vcf is None) == (variants is None):
        raise UserError("give the variants as --vcf FILE or as --variants TABLE (one of them)")
    if regions and vcf is None:
        raise UserError("--region reads an indexed VCF; filter a --variants table before passing it")
    plan = plan_vcf(vcf, regions, storage_options, log) if vcf is not None else None
    table = read_table(variants, storage_options) if variants is not None else []
    prov = provenance("score-variants", checkpoint, {"window_bp": window, "strands": strands, "k": tok.k,
                                                             "stride": tok.stride}, storage_options)
    if out_vcf is not None and not out_vcf.endswith(".vcf.gz"):
        raise UserError(f"--out-vcf {out_vcf}: name it FILE.vcf.gz (it is bgzipped and tabix-indexed)")
    prov_io.claim(out, prov, overwrite, storage_options, log)
    sorted_out.recover(out, storage_options, log)  # a sort a crash interrupted: finished or dropped first
    done = frozenset(runtime.written_keys(out, KEY, storage_options))
    if plan is not None:
        where = f"{len(regions)} region(s)" if regions else ("the whole file" if not plan.indexed else "its index")
        log(f"score    the alleles of {vcf} ({where}: {len(plan.units)} read task(s)), {len(done)} already in {out}; "
            f"windows of {window} bp")
        rows = unit_rows(plan)
        read = dict(read=allele_batches, read_kwargs=dict(plan=plan, done=done))
    else:
        todo = [a for a in table if (a.chrom, a.pos, a.id, a.ref, a.alt) not in done]
        log(f"score    {len(table)} allele(s) of {variants} ({len(table) - len(todo)} already in {out}); "
            f"windows of {window} bp")
        rows = [allele_row(a) for a in todo]
        read = {}
    summary = {"variants": 0, "skipped_done": len(done), "scored": 0, "errors": 0, "skipped_indels": 0,
               "skipped_symbolic": 0, "not_scored": {}, "contig_aliases": {}, "window_bp": window,
               "strands": strands, "regions": list(regions or []), "out": out, "seconds": 0.0}
    if rows:
        ran = runtime.run_pipeline(
            rows, out, windows, dict(fasta=fasta, k=tok.k, stride=tok.stride, window_bp=window, strands=strands,
                                     storage_options=storage_options),
            Scorer, dict(checkpoint=checkpoint, gpu=gpus_per_actor > 0, threads=max(1, int(cpus_per_actor)),
                         storage_options=storage_options, provenance=prov),
            batch_size, actors, cpus_per_actor, gpus_per_actor, storage_options, **read)
        summary["seconds"] = ran["seconds"]
    # The names as the output has them (a VCF without ##contig lines declares none up front).
    lengths = fasta_io.contig_lengths(fa)
    aliases = contig_aliases(runtime.distinct_values(out, "chrom", storage_options), lengths)
    if aliases:
        shown = ", ".join(f"{v} -> {f}" for v, f in sorted(aliases.items())[:6]) + (" ..." if len(aliases) > 6 else "")
        log(f"contigs  variant names matched to the FASTA's: {shown}")
    summary["contig_aliases"] = aliases
    summary["sorted_rows"] = sorted_out.sort_out(out, ["pos", "id", "ref", "alt"], list(lengths), prov,
                                                 storage_options, log)
    if out_vcf is not None:
        summary["vcf"] = write_vcf(out, out_vcf, prov, lengths, aliases, plan, storage_options, log)
    rows_out, kinds = error_kinds(out, storage_options)
    summary["not_scored"] = {k: kinds[k] for k in REASONS if kinds[k]}
    summary["skipped_indels"], summary["skipped_symbolic"] = kinds["indel"], kinds["symbolic"]
    summary["variants"], summary["errors"] = rows_out, sum(kinds.values())
    summary["scored"] = rows_out - summary["errors"]
    return summary


def error_kinds(out: str, storage_options: dict | None = None) -> tuple[int, Counter]:
    """(rows in OUT, rows not scored by the kind of their reason), a file at a time."""
    import pyarrow.compute as pc

    rows, kinds = 0, Counter()
    for errors in runtime.column_chunks(out, "error", storage_options):
        rows += len(errors)
        for item in pc.value_counts(errors).to_pylist():
            if item["values"]:
                kinds[reason_kind(item["values"])] += item["counts"]
    return rows, kinds
