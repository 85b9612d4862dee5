import pytest
import torch
from transformers import AutoModelForMaskedLM, AutoTokenizer, BertForMaskedLM

from randommask import KmerTokenizer
from randommask.data.tokenizer import CLS, MASK, NUM_SPECIAL, PAD, SEP
from randommask.training.masking import make_masker
from randommask.training.model import STATS, SparseMLM, build_config, build_mlm, mlm_forward, mlm_loss


def masked_batch(k=6, b=6, length=96, seed=0, strategy="span"):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(NUM_SPECIAL, 4**k + NUM_SPECIAL, (b, length), generator=g)
    ids[:, 0] = CLS
    ids[:, -1] = SEP
    attn = torch.ones_like(ids)
    ids[1, 60:] = PAD  # one padded row
    ids[1, 59] = SEP
    attn[1, 60:] = 0
    inputs, labels = make_masker(strategy, k)(ids, 0, g)
    return inputs, labels, attn


def test_presets():
    tiny = build_mlm("tiny")
    assert isinstance(tiny, BertForMaskedLM)
    assert tiny.config.vocab_size == 4101 and tiny.config.max_position_embeddings == 512
    assert tiny.config._attn_implementation == "sdpa"
    base = build_config("base")
    assert (base.num_hidden_layers, base.hidden_size, base.num_attention_heads, base.intermediate_size) == (12, 768, 12, 3072)
    assert build_mlm("tiny", k=4).config.vocab_size == 4**4 + 5
    assert build_mlm("tiny", num_hidden_layers=3).config.num_hidden_layers == 3


@pytest.mark.parametrize("preset, overrides, match", [
    ("huge", {}, "unknown model preset"),
    ("tiny", {"num_layers": 3}, "unknown model override"),
    ("tiny", {"hidden_size": 65}, "multiple of num_attention_heads"),
])
def test_bad_model_arguments(preset, overrides, match):
    with pytest.raises(ValueError, match=match):
        build_mlm(preset, **overrides)


@pytest.mark.parametrize("k, strategy", [(6, "span"), (6, "bert"), (4, "randommask"), (3, "span")])
def test_sparse_loss_equals_full_vocabulary_loss(k, strategy):
    torch.manual_seed(0)
    model = build_mlm("tiny", k=k).eval()
    inputs, labels, attn = masked_batch(k, strategy=strategy)
    ours = mlm_loss(model, inputs, labels, attn)
    hf = model(input_ids=inputs, attention_mask=attn, labels=labels).loss
    assert abs(ours.item() - hf.item()) < 1e-4
    # and the gradients agree
    g_ours = torch.autograd.grad(ours, model.bert.embeddings.word_embeddings.weight)[0]
    g_hf = torch.autograd.grad(model(input_ids=inputs, attention_mask=attn, labels=labels).loss,
                               model.bert.embeddings.word_embeddings.weight)[0]
    assert torch.allclose(g_ours, g_hf, atol=1e-6)


def test_forward_reports_accuracy_and_mask_only_figures_and_wrappers_agree():
    torch.manual_seed(0)
    model = build_mlm("tiny").eval()
    inputs, labels, attn = masked_batch()
    loss, stats = mlm_forward(model, inputs, labels, attn)
    s = dict(zip(STATS, stats.tolist()))
    sel = labels != -100
    assert s["selected"] == sel.sum().item()
    logits = model(input_ids=inputs, attention_mask=attn).logits
    assert s["correct"] == (logits[sel].argmax(-1) == labels[sel]).sum().item()
    # the [MASK]-only figures are exactly those of the labelled positions whose input is [MASK]
    at_mask = sel & (inputs == MASK)
    assert 0 < s["mask_selected"] == at_mask.sum().item() < s["selected"]
    ce = torch.nn.functional.cross_entropy(logits[at_mask], labels[at_mask], reduction="sum")
    assert abs(s["mask_loss_sum"] - ce.item()) < 1e-3
    assert s["mask_correct"] == (logits[at_mask].argmax(-1) == labels[at_mask]).sum().item()
    wrapped = SparseMLM(model)
    assert torch.allclose(mlm_loss(wrapped, inputs, labels, attn), loss)


def test_empty_selection_still_backpropagates():
    model = build_mlm("tiny")
    inputs, _, attn = masked_batch()
    loss = mlm_loss(model, inputs, torch.full_like(inputs, -100), attn)
    loss.backward()
    assert loss.item() == 0.0


def test_hugging_face_directory_round_trip(tmp_path):
    torch.manual_seed(0)
    model = build_mlm("tiny").eval()
    model.save_pretrained(tmp_path)
    KmerTokenizer(6).save_pretrained(tmp_path)
    loaded = AutoModelForMaskedLM.from_pretrained(tmp_path).eval()
    hf_tok = AutoTokenizer.from_pretrained(tmp_path)
    seq = "ACGTTAGCATTAGGACCATTAGAC"
    ids = torch.tensor([hf_tok(" ".join(seq[i : i + 6] for i in range(len(seq) - 5)))["input_ids"]])
    assert ids.tolist()[0] == KmerTokenizer(6).encode(seq)
    assert torch.allclose(loaded(input_ids=ids).logits, model(input_ids=ids).logits, atol=1e-5)
    assert loaded.config.kmer == 6
