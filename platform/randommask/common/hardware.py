"""What a GPU can do, for model-FLOPs utilisation (MFU): dense bf16 tensor-core peaks by card, and
the FLOPs a BERT MLM training step spends per token. Imports only torch-free Python."""

from __future__ import annotations

# Dense bf16 peaks (no sparsity) from the vendors' data sheets, in FLOP/s. Checked in order: the
# first fragment found in the device name wins, so the specific names come before the general.
PEAK_BF16_FLOPS: tuple[tuple[str, float], ...] = (
    ("H200 NVL", 835e12), ("H200", 989e12),
    ("H100 NVL", 835e12), ("H100 PCIe", 756e12), ("H100", 989e12),  # "H100 80GB HBM3" is the SXM part
    ("GH200", 989e12),
    ("A100", 312e12), ("L40S", 362e12), ("L4", 121e12), ("A10G", 70e12), ("A10", 125e12),
)


def peak_bf16_flops(device_name: str) -> tuple[str, float] | None:
    """``(card, peak FLOP/s)`` for a CUDA device name such as ``torch.cuda.get_device_name()``, or
    None for a card not in the table (MFU is then left out rather than guessed)."""
    for fragment, peak in PEAK_BF16_FLOPS:
        if fragment.lower() in device_name.lower():
            return fragment, peak
    return None


def train_flops_per_token(config, seq_len: int, masked_fraction: float) -> float:
    """Model FLOPs per token of a BERT MLM training step (forward + backward = 3x forward): the
    encoder's matmuls, attention scores and mixing, and the MLM head on the masked tokens only
    (the sparse loss projects nothing else). ``config`` is a transformers BertConfig."""
    h, layers, inter, vocab = config.hidden_size, config.num_hidden_layers, config.intermediate_size, config.vocab_size
    per_layer = 4 * h * h + 2 * h * inter
    attention = 2 * h * seq_len  # QK^T and AV per token per layer
    head = (h * h + h * vocab) * masked_fraction
    return 6 * (layers * per_layer + head) + 6 * layers * attention


def classifier_flops_per_token(config, seq_len: int) -> float:
    """Model FLOPs per token of a sequence-classification training step (the head is negligible)."""
    h, layers, inter = config.hidden_size, config.num_hidden_layers, config.intermediate_size
    return 6 * layers * (4 * h * h + 2 * h * inter + 2 * h * seq_len)
