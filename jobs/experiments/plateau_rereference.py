"""Re-read plateau-cpu against the counting references of issue 37: the geometry-matched tables of
the fixed evaluation sets (floors.json's base_table_span_k/_2k, best_counting_span_k/_2k) and
zero-shot's back-off tables (both strands, m = 1..10).

    python jobs/experiments/plateau_rereference.py KEEP PREPARED [FINALS]

KEEP is docs/experiments/plateau-cpu; PREPARED the experiment's prepared E. coli (prepared as
plateau-cpu.sh does: the split is deterministic); FINALS a folder of the kept finals (<arm>-s<seed>/).
The floors gain the new keys (the old ones stay). A final in FINALS is scored again by
``randommask zeroshot`` at the same positions (its JSON replaced, mean log P(ref) checked against the
old one); a zero-shot JSON whose checkpoint was not kept gets the new tables at its positions and the
difference of means, its standard error marked as not recomputed.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import yaml

from randommask.data.floors import split_codes
from randommask.inference.zeroshot import draw_positions, table_log_p_ref
from randommask.training.config import PretrainConfig
from randommask.training.driver import run_floors

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "plateau-cpu.yaml"


def floors(keep: Path, prepared: str) -> None:
    raw = yaml.safe_load(CONFIG.read_text())
    raw["data"]["prepared"] = prepared
    new = run_floors(PretrainConfig.model_validate(raw))
    path = keep / "floors.json"
    old = json.loads(path.read_text())
    for key in ("context_free", "overlap_per_base", "base_table", "eval_span_k_overlap", "overlap_only_span_k"):
        assert new[key] == old[key], (key, new[key], old[key])  # the same data and evaluation sets
    old.update({key: value for key, value in new.items() if key.startswith(("base_table_span", "best_counting"))})
    path.write_text(json.dumps(old, indent=1) + "\n")


def zeroshot(keep: Path, prepared: str, finals: Path | None) -> None:
    cache: dict = {}
    for path in sorted(keep.glob("*.zeroshot.json")):
        old = json.loads(path.read_text())
        run = path.name.split(".")[0]
        final = finals / run if finals else None
        if final is not None and final.is_dir() and path.name == f"{run}.zeroshot.json":
            subprocess.run([sys.executable, "-m", "randommask", "zeroshot", str(final), "--prepared", prepared,
                            "--positions", str(old["positions"]), "--seed", str(old["seed"]), "--window-bp",
                            str(old["window_bp"]), "--out", str(path)], check=True, capture_output=True)
            new = json.loads(path.read_text())
            assert abs(new["mean_log_p_ref"] - old["mean_log_p_ref"]) < 2e-4, (run, new, old)  # the same model
            print(f"{path.name}: scored again, best table {new['best_table']} {new['tables'][new['best_table']]}")
            continue
        key = (old["positions"], old["seed"], old["window_bp"])
        if key not in cache:
            windows = draw_positions(split_codes(prepared, "validation"), old["positions"], old["window_bp"] // 2,
                                     old["seed"])
            tables = table_log_p_ref(split_codes(prepared, "train", 64 << 20), windows)
            cache[key] = {m: round(float(t.mean()), 5) for m, t in tables.items()}
        tables = cache[key]
        best = max(tables, key=tables.get)
        old.update(tables=tables, best_table=best, vs_best_table=round(old["mean_log_p_ref"] - tables[best], 5),
                   vs_best_table_sem=None,
                   table_estimator="back-off count tables of the training split, both strands (data.counting); "
                   "recomputed at the same positions by jobs/experiments/plateau_rereference.py; the difference's "
                   "standard error is not recomputed (the checkpoint was not kept)")
        path.write_text(json.dumps(old, indent=1) + "\n")


if __name__ == "__main__":
    keep, prepared = Path(sys.argv[1]), sys.argv[2]
    floors(keep, prepared)
    zeroshot(keep, prepared, Path(sys.argv[3]) if len(sys.argv) > 3 else None)
