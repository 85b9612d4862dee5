"""Zero-shot of two checkpoints paired over the same held-out positions (what `randommask zeroshot`
draws with --positions 5000 --seed 0 and the training window), both strands: the mean difference of
log P(ref) A - B and its paired standard error, which the per-checkpoint JSONs (means only) cannot give.
Usage: paired_zeroshot.py PREPARED CHECKPOINT_A CHECKPOINT_B [WINDOW_BP]"""

import math
import sys

import torch

from randommask.data.floors import split_codes
from randommask.inference.centre import centred_window
from randommask.inference.zeroshot import draw_positions, model_log_p_ref

prepared, ckpt_a, ckpt_b = sys.argv[1:4]
window = centred_window(int(sys.argv[4]) if len(sys.argv) > 4 else 24)
torch.set_num_threads(1)  # beside other work on the cores
windows = draw_positions(split_codes(prepared, "validation", None), 5000, window // 2, 0)
a, _ = model_log_p_ref(ckpt_a, windows, "both", 256, 1, None)
b, _ = model_log_p_ref(ckpt_b, windows, "both", 256, 1, None)
d = a - b
print(f"n={len(d)} A {a.mean():.5f} B {b.mean():.5f} A-B {d.mean():+.5f} ± {d.std(ddof=1) / math.sqrt(len(d)):.5f} "
      "(paired standard error)")
