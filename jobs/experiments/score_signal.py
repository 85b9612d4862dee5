"""Does a model's zero-shot variant score carry signal? (docs/inference.md)

Default: the reference base's posterior (p_ref of `randommask score-variants`) at random positions
of a prepared genome's validation blocks, which pretraining never saw, for each checkpoint given:
its mean, and its mean log (the proper score: overconfidence shows there), beside chance (0.25,
ln 0.25 = -1.386).

    python jobs/experiments/score_signal.py --prepared outputs/experiments/collapse-cpu/prepared \
        --fasta ../shared/data/genomes/ecoli_536.fna.gz --window-bp 24 --positions 2000 \
        span=outputs/experiments/collapse-cpu/runs/span-s0/final ...

--combinations: how to combine the k masked tokens' predictions into one distribution over the
hidden base ("Why the geometric mean"): mean log P(ref) for their product, their geometric mean
(what score-variants uses) and the centre token alone. No Ray: windows and model run here.
"""

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "platform"))

from randommask.data.tokenizer import CODE_OF_BYTE, MASK, PAD  # noqa: E402
from randommask.inference import fasta as fasta_io  # noqa: E402
from randommask.inference.alleles import ACGT  # noqa: E402
from randommask.inference.runtime import load_model  # noqa: E402
from randommask.inference.variants import score_variants, windows  # noqa: E402

# Forward strand only: this records the comparison made before score-variants averaged both strands.

COMBINE = {"product": lambda L: L.sum(0), "geometric_mean": lambda L: L.mean(0), "centre": lambda L: L[len(L) // 2]}
QUIET = lambda *_: None  # noqa: E731


def held_out(prepared: str, fasta: str, window_bp: int, positions: int, seed: int) -> list[tuple[str, int, str]]:
    """(contig, 1-based position, reference base) at random in the validation blocks, a window away
    from their edges, A/C/G/T only."""
    manifest = json.loads(Path(prepared, "manifest.json").read_text())
    fa = fasta_io.open_fasta(fasta, log=QUIET)
    rng = np.random.default_rng(seed)
    margin = window_bp // 2
    blocks = [b for b in manifest["validation"] if b["end"] - b["start"] > 2 * margin]
    rows = []
    for _ in range(positions):
        b = blocks[rng.integers(len(blocks))]
        name = manifest["records"][b["record"]]["name"]
        p = int(rng.integers(b["start"] + margin, b["end"] - margin))
        rows.append((name, p + 1, fa[name][p].upper()))
    return [r for r in rows if r[2] in ACGT]


def signal(rows, fasta: str, window_bp: int, models: list[str]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        vcf = Path(tmp, "v.vcf")
        vcf.write_text("##fileformat=VCFv4.2\n#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO\n" + "".join(
            f"{c}\t{p}\tp{i}\t{r}\t{'A' if r != 'A' else 'C'}\t.\t.\t.\n" for i, (c, p, r) in enumerate(rows)))
        for spec in models:
            label, ckpt = spec.split("=", 1)
            out = Path(tmp, label)
            s = score_variants(ckpt, fasta, str(vcf), str(out), window_bp=window_bp, log=QUIET)
            t = pq.read_table(out).to_pandas()
            p = t["p_ref"].dropna().to_numpy()
            print(json.dumps({"model": label, "positions": len(p), "errors": s["errors"],
                              "p_ref_mean": round(float(p.mean()), 4),
                              "p_ref_sem": round(float(p.std(ddof=1) / np.sqrt(len(p))), 4),
                              "log_p_ref_mean": round(float(np.log(p).mean()), 4),
                              "entropy_mean": round(float(t["entropy"].dropna().mean()), 4),
                              "chance": 0.25, "chance_log": round(float(np.log(0.25)), 4),
                              "window_bp": window_bp, "seconds": s["seconds"]}), flush=True)


def combinations(rows, fasta: str, window_bp: int, models: list[str]) -> None:
    batch = {"chrom": np.array([r[0] for r in rows], dtype=object), "norm_pos": np.array([r[1] for r in rows]),
             "norm_ref": np.array([r[2] for r in rows], dtype=object), "error": np.array([""] * len(rows), dtype=object)}
    w = windows(batch, fasta, 6, 1, window_bp, strands="forward")
    for spec in models:
        label, ckpt = spec.split("=", 1) if "=" in spec else (spec, spec)
        model, _, _ = load_model(ckpt, "mlm", gpu=False, threads=None)
        ids = torch.from_numpy(np.stack([x[0] for x in w["ids"]]).astype(np.int64))
        with torch.no_grad():
            logp = torch.log_softmax(model(input_ids=ids, attention_mask=(ids != PAD).long()).logits.float(), -1).numpy()
        out = {"model": label, "positions": len(rows), "chance_log": round(float(np.log(0.25)), 4)}
        for name, combine in COMBINE.items():
            log_ref = []
            for r, (_, _, ref) in enumerate(rows):
                masked = np.where(w["ids"][r][0] == MASK)[0]
                lp = logp[r, masked][np.arange(len(masked))[:, None], w["candidates"][r][0]].astype(np.float64)
                s = combine(lp)
                s = s - s.max()
                log_ref.append(s[CODE_OF_BYTE[ord(ref)]] - np.log(np.exp(s).sum()))
            out[f"{name}_mean_log_p_ref"] = round(float(np.mean(log_ref)), 4)
            out[f"{name}_mean_p_ref"] = round(float(np.mean(np.exp(log_ref))), 4)
        print(json.dumps(out), flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--prepared", required=True)
    ap.add_argument("--fasta", required=True)
    ap.add_argument("--window-bp", type=int, required=True)
    ap.add_argument("--positions", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--combinations", action="store_true", help="compare ways to combine the k masked tokens")
    ap.add_argument("models", nargs="+", help="NAME=CHECKPOINT")
    args = ap.parse_args()
    rows = held_out(args.prepared, args.fasta, args.window_bp, args.positions, args.seed)
    (combinations if args.combinations else signal)(rows, args.fasta, args.window_bp, args.models)


if __name__ == "__main__":
    main()
