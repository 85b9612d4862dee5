"""BERT masked-language models over k-mer vocabularies, and the sparse MLM loss.

The vocabulary projection (hidden x 4**k+5) dominates the cost of small models. Only the ~15-40%
of positions that carry a label need it, so :func:`mlm_loss` gathers those hidden states first and
projects only them; the loss equals Hugging Face's full-vocabulary loss.
"""

from __future__ import annotations

import contextlib
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from transformers import BertConfig, BertForMaskedLM

from randommask.data.tokenizer import MASK, PAD, vocab_size_for
from randommask.errors import UserError

MAX_POSITIONS = 512  # DNABERT's: [CLS], 510 overlapping 6-mers and [SEP], i.e. a 515-bp window

PRESETS: dict[str, dict[str, int]] = {
    # tests: seconds on a CPU
    "tiny": dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=2, intermediate_size=256),
    # CPU demo: a few minutes on 2 cores
    "small": dict(hidden_size=256, num_hidden_layers=4, num_attention_heads=4, intermediate_size=1024),
    # DNABERT's size
    "base": dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072),
}


def build_config(preset: str, k: int = 6, **overrides: Any) -> BertConfig:
    if preset not in PRESETS:
        raise UserError(f"unknown model preset {preset!r}; choose one of {', '.join(PRESETS)}")
    params: dict[str, Any] = dict(
        vocab_size=vocab_size_for(k),
        max_position_embeddings=MAX_POSITIONS,
        pad_token_id=PAD,
        type_vocab_size=2,
        hidden_act="gelu",
        hidden_dropout_prob=0.1,
        # 0.0 as in DNABERT-2 and MosaicBERT: fused SDPA kernels (flash, memory-efficient) need no
        # dropout on attention probabilities, and the (B, heads, L, L) matrix is never materialized.
        attention_probs_dropout_prob=0.0,
        **PRESETS[preset],
    )
    unknown = sorted(set(overrides) - set(BertConfig().to_dict()) - set(params))
    if unknown:
        raise UserError(f"unknown model override(s) {', '.join(unknown)}: use BertConfig field names")
    params.update(overrides)
    if params["hidden_size"] % params["num_attention_heads"]:
        raise UserError(
            f"hidden_size {params['hidden_size']} is not a multiple of num_attention_heads {params['num_attention_heads']}")
    cfg = BertConfig(**params)
    cfg.kmer = k  # recorded so fine-tuning and analysis tokenize as pretrained
    return cfg


def build_mlm(preset: str, k: int = 6, **overrides: Any) -> BertForMaskedLM:
    """A freshly initialised ``BertForMaskedLM`` with SDPA attention for a k-mer vocabulary."""
    return BertForMaskedLM._from_config(build_config(preset, k, **overrides), attn_implementation="sdpa")


# The counts that ``mlm_forward`` returns beside the loss, in this order (one float tensor): all labelled
# positions, and the subset whose input is [MASK]. Only the latter cannot be solved by copying the
# input (a kept token shows its own label), so it is the honest headline.
STATS = ("correct", "selected", "mask_loss_sum", "mask_correct", "mask_selected")


def selected_logits(mlm: BertForMaskedLM, input_ids: torch.Tensor, labels: torch.Tensor,
                    attention_mask: torch.Tensor | None = None) -> torch.Tensor:
    """(N, vocab) logits at the labelled positions, in row-major order: only they are projected."""
    hidden = mlm.bert(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
    return mlm.cls(hidden[labels != -100])


def _sparse_forward(mlm: BertForMaskedLM, input_ids: torch.Tensor, labels: torch.Tensor,
                    attention_mask: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    logits = selected_logits(mlm, input_ids, labels, attention_mask)
    selected = labels != -100
    target = labels[selected]
    if target.numel() == 0:  # keep the graph connected so DDP and backward still work on an empty batch
        zero = logits.sum() * 0.0
        return zero, torch.zeros(len(STATS), device=zero.device)
    losses = F.cross_entropy(logits.float(), target, reduction="none")
    hit = (logits.argmax(-1) == target).float()
    masked = (input_ids[selected] == MASK).float()
    with torch.no_grad():
        stats = torch.stack([hit.sum(), torch.tensor(float(target.numel()), device=hit.device),
                             (losses.detach() * masked).sum(), (hit * masked).sum(), masked.sum()])
    return losses.mean(), stats


class SparseMLM(nn.Module):
    """Wraps a ``BertForMaskedLM`` so that DDP sees the sparse loss as the module's forward."""

    def __init__(self, mlm: BertForMaskedLM) -> None:
        super().__init__()
        self.module = mlm

    def forward(self, input_ids, labels, attention_mask=None):
        return _sparse_forward(self.module, input_ids, labels, attention_mask)


def mlm_forward(model: nn.Module, input_ids: torch.Tensor, labels: torch.Tensor,
                attention_mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """``(loss, stats)`` of the sparse MLM loss; ``stats`` holds the counts named in :data:`STATS`.

    ``model`` is a ``BertForMaskedLM``, a :class:`SparseMLM`, or either under DDP. Under DDP pass
    a DDP-wrapped :class:`SparseMLM`, so that gradients are synchronised.
    """
    if isinstance(model, BertForMaskedLM):
        return _sparse_forward(model, input_ids, labels, attention_mask)
    return model(input_ids, labels, attention_mask)


def mlm_loss(model: nn.Module, input_ids: torch.Tensor, labels: torch.Tensor,
             attention_mask: torch.Tensor | None = None) -> torch.Tensor:
    """Masked-LM cross-entropy over labelled positions; equals ``model(..., labels=labels).loss``."""
    return mlm_forward(model, input_ids, labels, attention_mask)[0]


def autocast(device: torch.device):
    """bf16 autocast on CUDA (with TF32 for what stays in fp32); fp32 on CPU. One code path for both:
    pretraining, fine-tuning and the GPU check."""
    if device.type != "cuda":
        return contextlib.nullcontext()
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    return torch.autocast("cuda", dtype=torch.bfloat16)
