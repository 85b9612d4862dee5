"""The trained window travels with the model: the tiny run (128-bp windows) records it in every
checkpoint it writes (config.json and the card), and on a copy of its final/ far from the run
directory every command reads it: each one's window is pinned below, computed by hand for k=6,
stride 1 (128 bp: 123 6-mers + [CLS] + [SEP] = 125 positions). Wider windows are refused in one
line before any Ray work."""

from __future__ import annotations

import json
import shutil

import pytest

from conftest import random_dna, write_fasta
from randommask.errors import UserError
from randommask.evaluation.probe import probe
from randommask.inference.embed import embed
from randommask.inference.variants import score_variants
from randommask.inference.zeroshot import zeroshot

QUIET = lambda *_: None  # noqa: E731


@pytest.mark.ray
def test_every_checkpoint_the_run_writes_records_its_window(tiny_run):
    from huggingface_hub import ModelCard

    run, _, cfg = tiny_run
    assert cfg.data.window_bp == 128
    dirs = [run / "final", *sorted(run.glob("step_*/model"))]
    assert len(dirs) >= 2
    for d in dirs:
        config = json.loads((d / "config.json").read_text())
        assert (config["randommask_window_bp"], config["randommask_window_tokens"]) == (128, 125), d
    card = ModelCard.load(run / "final" / "README.md")
    meta = card.data.to_dict()["randommask"]
    assert (meta["window_bp"], meta["window_tokens"]) == (128, 125)
    assert "| trained window | 128 bp (125 positions, [CLS] and [SEP] included) |" in card.text
    assert "at\nmost 125 tokens" in card.text


@pytest.mark.ray
def test_a_copied_final_gives_every_command_the_trained_window(tiny_run, prepared, gue_dir, tmp_path):
    run, _, _ = tiny_run
    ckpt = str(shutil.copytree(run / "final", tmp_path / "elsewhere" / "final"))  # no config.yaml above it
    seq = random_dna(3000, 5)
    fa = write_fasta(tmp_path / "g.fa", {"chrT": seq})
    bed = tmp_path / "r.bed"
    bed.write_text("chrT\t100\t400\tr1\n")
    table = tmp_path / "v.csv"
    table.write_text("chrom,pos,ref,alt\n" + f"chrT,1500,{seq[1499]},{'A' if seq[1499] != 'A' else 'C'}\n")

    z = zeroshot(ckpt, prepared, str(tmp_path / "z.json"), positions=50, log=QUIET)
    assert z["window_bp"] == 127  # 128 made odd (centred): 122 6-mers + 2 = 124 positions
    gue = tmp_path / "gue"
    for split, rows in (("train", 60), ("dev", 10), ("test", 30)):
        lines = (gue_dir / "tf" / "0" / f"{split}.csv").read_text().splitlines()[: rows + 1]
        (gue / "tf" / "0").mkdir(parents=True, exist_ok=True)
        (gue / "tf" / "0" / f"{split}.csv").write_text("\n".join(lines) + "\n")
    p = probe(ckpt, str(gue), "tf/0", str(tmp_path / "p.json"), log=QUIET)
    assert p["window_bp"] == 128  # windows of 123 6-mers each
    e = embed(ckpt, str(fa), str(bed), str(tmp_path / "emb"), log=QUIET)
    # 300 bp = 295 6-mers in tiles of 123: 123 + 123 + 49
    assert e["max_kmers"] == 123 and e["tiles"] == 3 * 2  # both strands (no strand in the BED)
    s = score_variants(ckpt, str(fa), None, str(tmp_path / "sv"), variants=str(table), log=QUIET)
    assert s["window_bp"] == 127 and s["scored"] == 1

    # wider than trained: one line, before any work (nothing written), unless allowed
    refusals = [
        (lambda **kw: zeroshot(ckpt, prepared, str(tmp_path / "z2.json"), window_bp=200, log=QUIET, **kw),
         "--window-bp 200 (windows of 199 bp) needs 196 positions", tmp_path / "z2.json"),
        (lambda **kw: embed(ckpt, str(fa), str(bed), str(tmp_path / "e2"), window_bp=200, log=QUIET, **kw),
         "--window-bp 200 (tiles of 195 6-mers) needs 197 positions", tmp_path / "e2"),
        (lambda **kw: score_variants(ckpt, str(fa), None, str(tmp_path / "s2"), variants=str(table), window_bp=200,
                                     log=QUIET, **kw),
         "--window-bp 200 (windows of 199 bp) needs 196 positions", tmp_path / "s2"),
    ]
    for call, message, out in refusals:
        with pytest.raises(UserError) as err:
            call()
        assert str(err.value).startswith(message + "; ") and "\n" not in str(err.value)
        assert "pretrained on 125 (windows of 128 bp)" in str(err.value) and not out.exists()
    assert embed(ckpt, str(fa), str(bed), str(tmp_path / "e3"), window_bp=200, allow_untrained_positions=True,
                 log=QUIET)["max_kmers"] == 195
