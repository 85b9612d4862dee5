"""The validator: the fixed evaluation sets, built once, and the evaluation on them.

Every run with the same data, window length and ``run.eval_windows`` is judged on the same windows
under the same masks (span k and span 2k, drawn from ``EVAL_SEED``), whatever its own masking
schedule and seed, so runs compare on one task. The driver uses the same sets for the floors.
"""

from __future__ import annotations

import torch

from randommask.data.stream import validation_windows
from randommask.errors import UserError
from randommask.training.baseloss import all_mask, per_base_sums
from randommask.training.collectives import all_reduce_sum
from randommask.training.config import PretrainConfig
from randommask.training.masking import make_masker
from randommask.training.metrics import EVAL_METRICS, EVAL_SETS, mask_figures
from randommask.training.model import STATS, autocast, mlm_forward, selected_logits

EVAL_SEED = 20231013  # the same evaluation masks for every run, schedule and seed
SPAN_IN_K = {"span_k": 1, "span_2k": 2}  # each set's span, in multiples of k


def eval_sets(cfg: PretrainConfig) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """``{name: (inputs, labels)}`` for each of ``EVAL_SETS``. Raises UserError when the data hold no
    validation window."""
    d = cfg.data
    windows = validation_windows(d, cfg.run.eval_windows)
    ids = torch.from_numpy(windows).long()
    return {name: make_masker("span", d.k, span=SPAN_IN_K[name] * d.k)(ids, 0, torch.Generator().manual_seed(EVAL_SEED))
            for name in EVAL_SETS}


class Validator:
    """Evaluates a model on the fixed sets: each rank takes every world-th row, and one all-reduce of
    the counts per set makes the figures. No sets (no validation windows): nothing is ever due."""

    def __init__(self, cfg: PretrainConfig, rank: int, world: int, device: torch.device) -> None:
        self.rank, self.world, self.device = rank, world, device
        self.every, self.batch_size = cfg.run.eval_every, cfg.optim.batch_size
        self.k, self.stride = cfg.data.k, cfg.data.stride
        try:
            self.sets = eval_sets(cfg)
        except UserError:
            self.sets = {}  # val_fraction 0, or windows longer than any validation region

    def due(self, step: int, last: bool) -> bool:
        return bool(self.sets) and (step % self.every == 0 or last)

    @torch.no_grad()
    def evaluate(self, mlm: torch.nn.Module) -> dict[str, float]:
        """The figures of each set (``EVAL_METRICS``); ``base_loss`` is the per-base loss of
        ``training.baseloss``, from a second forward pass with every selected token [MASK]."""
        # The unwrapped module: per-rank work plus one all-reduce of counts, with no DDP forward (no
        # buffer broadcast, and ranks with fewer rows cannot desynchronise it).
        mlm.eval()
        out = {}
        for name, (inputs, labels) in self.sets.items():
            mine = torch.arange(self.rank, len(inputs), self.world)  # this rank's rows of the fixed set
            totals = torch.zeros(3 + len(STATS), dtype=torch.float64)  # loss sum, STATS, base loss sum, bases
            for i in range(0, len(mine), self.batch_size):
                rows = mine[i : i + self.batch_size]
                x, y = inputs[rows].to(self.device), labels[rows].to(self.device)
                with autocast(self.device):
                    loss, counts = mlm_forward(mlm, x, y)
                    logits = selected_logits(mlm, all_mask(x, y), y)
                base = per_base_sums(logits, x, y, self.k, self.stride)
                totals += torch.cat([(loss.detach() * counts[1]).reshape(1).cpu().double(), counts.cpu().double(),
                                     torch.tensor(base, dtype=torch.float64)])
            t = dict(zip(("loss_sum", *STATS, "base_loss_sum", "bases"),
                         all_reduce_sum(totals, self.world, self.device).tolist()))
            n = max(t["selected"], 1)
            figures = {"loss": round(t["loss_sum"] / n, 5), "acc": round(t["correct"] / n, 5),
                       **mask_figures(t["mask_loss_sum"], t["mask_correct"], t["mask_selected"]),
                       "base_loss": round(t["base_loss_sum"] / t["bases"], 5) if t["bases"] else None}
            out.update({EVAL_METRICS[(name, fig)]: value for fig, value in figures.items()})
        return out
