"""``score-variants --out-vcf``: the scored records as a VCF, sorted, bgzipped and tabix-indexed.

The driver merges two streams that are both in genome order: OUT's sorted Parquet files (a file at
a time) and the input VCF's records, contig by contig (through its index; a VCF without one is read
once per contig). Each input record that has rows in OUT is written as it was, plus INFO fields of
one value per ALT (Number=A): RM_LLR, RM_PREF, RM_PALT, RM_ENTROPY, and RM_ERR (why an ALT was not
scored, spaces as underscores). Records outside the ``--region``s were not scored and are not
written. A ``--variants`` table has no records: each (chrom, pos, id, ref) becomes a sites-only
record. The file is written aside, indexed, then renamed into place (or uploaded), so a failure
leaves no half-written VCF.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterator

from randommask.common import storage
from randommask.errors import UserError
from randommask.inference import runtime
from randommask.inference.alleles import reason_kind
from randommask.inference.sorted_out import contig_ranks

VALUES = {"RM_LLR": ("llr", "log P(alt) - log P(ref): the masked-LM log-likelihood ratio of the ALT base, in nats"),
          "RM_PREF": ("p_ref", "P(REF base) from the masked-LM at the variant's position"),
          "RM_PALT": ("p_alt", "P(ALT base) from the masked-LM at the variant's position"),
          "RM_ENTROPY": ("entropy", "entropy of the masked-LM's distribution over A, C, G, T at the position, nats")}
ERR = "RM_ERR"


def sorted_groups(out: str, storage_options: dict | None = None) -> Iterator[tuple[str, int, dict]]:
    """OUT's rows (sorted) grouped by (chrom, pos): ``(chrom, pos, {(id, ref, alt): row})``."""
    import pyarrow.parquet as pq

    fs, _ = storage.filesystem(out, storage_options)
    key, group = None, {}
    for name in runtime.parquet_files(out, storage_options):
        with fs.open(name, "rb") as f:
            for batch in pq.ParquetFile(f).iter_batches(batch_size=65536):
                for row in batch.to_pylist():
                    k = (row["chrom"], row["pos"])
                    if k != key:
                        if key is not None:
                            yield key[0], key[1], group
                        key, group = k, {}
                    group[(row["id"], row["ref"], row["alt"])] = row
    if key is not None:
        yield key[0], key[1], group


def vcf_header(pysam, base, prov: dict[str, Any], contigs: list[str], lengths: dict[str, int],
               aliases: dict[str, str]):
    """The output's header: the input's (``base``; None for a table), our INFO fields and provenance
    lines, and a ``##contig`` line for each contig it lacks."""
    hdr = pysam.VariantHeader()
    if base is not None:  # the input's header, less what an earlier run of ours added (replaced below)
        for rec in base.records:
            ours = rec.type == "INFO" and str(rec.get("ID", "")).startswith("RM_")
            if not ours and not rec.key.startswith("randommask_"):
                hdr.add_record(rec)
        for sample in base.samples:
            hdr.add_sample(sample)
    for c in contigs:
        if c not in hdr.contigs:
            n = lengths.get(aliases.get(c, c))
            hdr.contigs.add(c, length=n) if n else hdr.contigs.add(c)
    checkpoint = f"checkpoint {prov['checkpoint']}, weights sha256 {prov['weights_sha256'][:16]}"
    for tag, (_, text) in VALUES.items():
        hdr.info.add(tag, "A", "Float", f"randommask score-variants: {text} ({checkpoint})")
    hdr.info.add(ERR, "A", "String", "randommask score-variants: why the ALT was not scored (docs/inference.md)")
    hdr.add_line(f"##randommask_checkpoint={prov['checkpoint']}")
    hdr.add_line(f"##randommask_weights_sha256={prov['weights_sha256']}")
    settings = ";".join(f"{k}={v}" for k, v in prov["settings"].items())
    hdr.add_line(f"##randommask_command=score-variants {settings} (randommask {prov.get('randommask')})")
    return hdr


def _info(rows: list[dict | None]) -> str:
    """Our INFO fields for one record, one value per ALT (``.`` where there is none)."""
    parts = []
    for tag, (column, _) in VALUES.items():
        values = [None if r is None else r[column] for r in rows]
        if any(v is not None for v in values):  # float32 in BCF: 9 digits keep every bit
            parts.append(f"{tag}=" + ",".join("." if v is None else f"{v:.9g}" for v in values))
    errors = [None if r is None or not r["error"] else reason_kind(r["error"]).replace(" ", "_") for r in rows]
    if any(errors):
        parts.append(f"{ERR}=" + ",".join(e or "." for e in errors))
    return ";".join(parts)


def _line(text: str, rows: list[dict | None]) -> str:
    """A record's VCF line (as htslib wrote it) with our INFO fields in place of any it had."""
    cols = text.rstrip("\n").split("\t")
    kept = [f for f in cols[7].split(";") if f != "." and f.split("=", 1)[0] not in (*VALUES, ERR)]
    extra = _info(rows)
    cols[7] = ";".join(kept + ([extra] if extra else [])) or "."
    return "\t".join(cols) + "\n"


JUMP_BP = 1_000_000  # an indexed VCF is re-entered through its index across gaps longer than this


def _records(plan, contig: str, start: int = 0):
    """The input's records of one contig from 0-based ``start`` (an indexed VCF through its index;
    one without is read from its beginning), checked to be in position order."""
    import pysam

    last = 0
    with pysam.VariantFile(plan.path) as vf:
        for r in (vf.fetch(contig, start) if plan.indexed else (r for r in vf if r.chrom == contig)):
            if r.pos < last:
                raise UserError(f"--out-vcf: {plan.uri} is not sorted by position within {contig} (record at "
                                f"{contig}:{r.pos} after one at {last}); sort it (bcftools sort) and rerun: the scores "
                                "in --out are complete and are reused")
            last = r.pos
            yield r


def write_vcf(out: str, out_vcf: str, prov: dict[str, Any], lengths: dict[str, int], aliases: dict[str, str],
              plan=None, storage_options: dict | None = None, log: Callable[[str], None] = print) -> dict[str, int]:
    """Write ``out_vcf`` from OUT (sorted) and the input VCF of ``plan`` (None: a table's sites);
    returns the records and ALTs written."""
    import pysam

    pysam.set_verbosity(0)
    names = runtime.distinct_values(out, "chrom", storage_options)
    ranks = contig_ranks(names, list(lengths))
    contigs = sorted(names, key=ranks.__getitem__)
    base = None
    if plan is not None:
        with pysam.VariantFile(plan.path) as vf:
            base = vf.header.copy()
    hdr = vcf_header(pysam, base, prov, contigs, lengths, aliases)
    records = alts = 0
    with tempfile.TemporaryDirectory() as d:
        tmp = os.path.join(d, "out.vcf.gz")
        # Text through BGZF: a record keeps every field as the input had it (htslib's own formatting).
        with pysam.BGZFile(tmp, "wb") as w:
            w.write(str(hdr).encode())
            for contig, pos, group, stream in _merge(sorted_groups(out, storage_options), plan):
                for record, keys in stream:
                    rows = [group.get(k) for k in keys]
                    if record is None:  # a table's site
                        vid, ref = keys[0][0], keys[0][1]
                        text = f"{contig}\t{pos}\t{vid}\t{ref}\t{','.join(k[2] for k in keys)}\t.\t.\t.\n"
                    else:
                        text = str(record)
                    w.write(_line(text, rows).encode())
                    records, alts = records + 1, alts + len(keys)
        pysam.tabix_index(tmp, preset="vcf", force=True)
        _publish(tmp, out_vcf, storage_options)
    log(f"vcf      {records} record(s), {alts} ALT(s) -> {out_vcf} (+ .tbi)")
    return {"records": records, "alts": alts}


def _merge(groups, plan):
    """``(contig, pos, group, [(record, keys)])`` for each (contig, pos) of OUT: the input's records
    there that OUT scored (a table, ``plan`` None: one site per (id, ref), record None)."""
    contig_now, it, pending = None, iter(()), None
    for contig, pos, group in groups:
        if plan is None:
            sites: dict[tuple, list] = {}
            for vid, ref, alt in group:
                sites.setdefault((vid, ref), []).append((vid, ref, alt))
            yield contig, pos, group, [(None, keys) for keys in sites.values()]
            continue
        ahead = pending.pos if pending is not None else 0
        if contig != contig_now or (plan.indexed and pos - ahead > JUMP_BP):
            contig_now, it, pending = contig, _records(plan, contig, pos - 1 if plan.indexed else 0), None
        matched = []
        while True:
            r = pending if pending is not None else next(it, None)
            pending = None
            if r is None or r.pos > pos:
                pending = r
                break
            if r.pos == pos:
                keys = [(r.id or ".", r.ref, alt) for alt in (r.alts or (".",))]
                if all(k in group for k in keys):
                    matched.append((r, keys))
        if not matched:
            if not plan.indexed:
                for _ in it:  # an unsorted file says so here (``_records`` checks the order), before the miss
                    pass
            raise UserError(f"--out-vcf: {contig}:{pos} is in --out but not in {plan.uri}; was the VCF changed since "
                            "it was scored? Score it into a new --out")
        yield contig, pos, group, matched


def _publish(tmp: str, out_vcf: str, storage_options: dict | None) -> None:
    if storage.is_local(out_vcf):
        target = Path(out_vcf).expanduser()
        target.parent.mkdir(parents=True, exist_ok=True)
        part = target.with_name(f".{target.name}.partial")
        os.replace(tmp, part)
        os.replace(tmp + ".tbi", str(target) + ".tbi")
        os.replace(part, target)
    else:
        storage.put_file(tmp, out_vcf, storage_options)
        storage.put_file(tmp + ".tbi", out_vcf + ".tbi", storage_options)
