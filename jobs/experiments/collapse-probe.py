"""Collapse probe (docs/experiments.md section 3): a plain torch loop over this package's tokenizer,
masker and model, outside Ray, to search for a CPU regime where DNABERT's span masking collapses.
It logs the [MASK]-only loss on 2,048 evenly spaced held-out windows (the last 1% of the genome)
under fixed span-k masks (80/10/10) every 250 steps. Step counts do not depend on the hardware, so a
grid can run on a GPU (jobs/experiments/collapse-probe-grid.sh) and be priced in CPU minutes with
the seconds per step measured here. Run from the repository root:
    python jobs/experiments/collapse-probe.py --out probe.jsonl --steps 8000 --hidden 128 --heads 4 --w 24 --bs 256
"""
import argparse
import json
import sys
import time

import numpy as np
import torch

sys.path.insert(0, "platform")  # the package's own code, without installing it (the GPU machine has no Ray)
from randommask.data.genome import genome_codes
from randommask.data.tokenizer import MASK, KmerTokenizer
from randommask.training.masking import make_masker
from randommask.training.model import build_mlm, mlm_forward

p = argparse.ArgumentParser()
p.add_argument("--k", type=int, default=6); p.add_argument("--w", type=int, default=40)
p.add_argument("--bs", type=int, default=128); p.add_argument("--lr", type=float, default=2e-3)
p.add_argument("--hidden", type=int, default=64); p.add_argument("--layers", type=int, default=2)
p.add_argument("--heads", type=int, default=2); p.add_argument("--inter", type=int, default=0)
p.add_argument("--strategy", default="span"); p.add_argument("--centre", type=float, default=0.025)
p.add_argument("--mtp", type=float, default=0.8); p.add_argument("--rtp", type=float, default=0.1)
p.add_argument("--minutes", type=float, default=15); p.add_argument("--warmup", type=int, default=100)
p.add_argument("--threads", type=int, default=2); p.add_argument("--out", required=True)
p.add_argument("--wd", type=float, default=0.01); p.add_argument("--device", default="cpu"); p.add_argument("--steps", type=int, default=0); p.add_argument("--genome", default="/work/shared/data/genomes/ecoli_536.fna.gz"); p.add_argument("--init", type=float, default=0.02); p.add_argument("--seed", type=int, default=0); p.add_argument("--maxpos", type=int, default=512)
a = p.parse_args()
torch.set_num_threads(a.threads); torch.manual_seed(a.seed)
codes = genome_codes(a.genome)
n = len(codes); cut = int(n * 0.99)
tr, va = codes[:cut], codes[cut:]
tok = KmerTokenizer(a.k)
extra = {} if a.strategy == "bert" else {"centre_prob": a.centre}
masker = make_masker(a.strategy, a.k, mask_token_prob=a.mtp, random_token_prob=a.rtp, **extra)
evm = make_masker("span", a.k)
model = build_mlm("tiny", a.k, hidden_size=a.hidden, num_hidden_layers=a.layers, num_attention_heads=a.heads,
                  intermediate_size=a.inter or 4 * a.hidden, hidden_dropout_prob=0.0, max_position_embeddings=a.maxpos, initializer_range=a.init).to(a.device)
opt = torch.optim.AdamW(model.parameters(), lr=a.lr, weight_decay=a.wd, betas=(0.9, 0.98), eps=1e-6)
sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / a.warmup))
rng = np.random.default_rng(a.seed)
g = torch.Generator(device=a.device).manual_seed(0)
ve = torch.from_numpy(tok.encode_windows(np.stack([va[s:s + a.w] for s in np.linspace(0, len(va) - a.w - 1, 2048).astype(int)]))).long()
vin, vlab = evm(ve, 0, torch.Generator().manual_seed(123)); vin, vlab = vin.to(a.device), vlab.to(a.device)
def evaluate():
    model.eval(); tot = 0.0; cnt = 0; cor = 0
    with torch.no_grad():
        for i in range(0, len(ve), 512):
            x, y = vin[i:i+512], vlab[i:i+512].clone()
            y[x != MASK] = -100
            l, st = mlm_forward(model, x, y)
            tot += st[2].item(); cnt += st[4].item(); cor += st[3].item()
    model.train(); return tot / cnt, cor / cnt
t0 = time.time(); step = 0
log = open(a.out, "w")
log.write(json.dumps(vars(a)) + "\n")
while step < (a.steps or 10**9) and time.time() - t0 < a.minutes * 60:
    st = rng.integers(0, len(tr) - a.w, size=a.bs)
    x = torch.from_numpy(tok.encode_windows(tr[st[:, None] + np.arange(a.w)])).long().to(a.device)
    inp, lab = masker(x, step, g)
    loss, _ = mlm_forward(model, inp, lab)
    opt.zero_grad(set_to_none=True); loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0); opt.step(); sched.step(); step += 1
    if step % 250 == 0:
        el, ea = evaluate()
        r = dict(step=step, min=round((time.time() - t0) / 60, 2), train=round(loss.item(), 3), eval_mask=round(el, 3), acc=round(ea, 3))
        log.write(json.dumps(r) + "\n"); log.flush()
