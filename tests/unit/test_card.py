"""The pretraining model card: Hugging Face front matter that huggingface_hub parses, the masking
schedule by phase, the figures beside their references (the card of a real run is checked in
tests/integration/test_pretrain.py)."""

from huggingface_hub import ModelCard

from conftest import load_tiny
from randommask.training.card import phases, pretraining_card

FLOORS = {"context_free": 8.1698, "base_table": {"1": 1.3567, "4": 1.2993}, "overlap_only_span_k": 1.8694,
          "eval_span_k_overlap": 1.7457, "overlap_only_span_2k": 3.7965, "eval_span_2k_overlap": 3.5454,
          "base_table_span_k": {"1": 1.3759, "8": 1.348}, "best_counting_span_k": 1.348,
          "base_table_span_2k": {"1": 1.3835, "8": 1.3769}, "best_counting_span_2k": 1.3769}
MANIFEST = {"run": "abc", "sources": [{"uri": "/data/g.fa.gz", "bytes": 10, "sha256": "f" * 64, "records": 1}],
            "totals": {"files": 1, "records": 1, "bases": 1000, "train_bases": 990, "validation_bases": 10,
                       "validation_fraction": 0.01}}
HISTORY = [{"step": 100, "tokens": 4000, "loss": 7.5, "mask_loss": 7.9},
           {"step": 150, "tokens": 6000, "loss": 7.1, "mask_loss": 7.4, "eval_span_k_loss": 7.0,
            "eval_span_k_mask_loss": 7.2345, "eval_span_2k_mask_loss": 7.7777, "eval_span_k_base_loss": 1.3801,
            "eval_span_2k_base_loss": 1.3811}]


def test_phases_follow_the_schedule_and_merge_a_fixed_span(tmp_path):
    rm = load_tiny(tmp_path, tmp_path, "r")  # phase_ends [30, 60, 90, 120, 150]
    assert phases(rm) == [(1, 30, (6, 6)), (31, 60, (6, 8)), (61, 90, (6, 10)), (91, 120, (6, 12)),
                          (121, 150, (6, 14))]
    span = load_tiny(tmp_path, tmp_path, "s", "masking.strategy=span", "masking.phase_ends=null")
    assert phases(span) == [(1, 150, (6, 6))]


def test_the_card_parses_and_shows_figures_beside_references(tmp_path):
    cfg = load_tiny(tmp_path, tmp_path, "r", "run.card_license=apache-2.0", "model.init_from=null")
    text = pretraining_card(cfg, HISTORY, FLOORS, MANIFEST, {"num_hidden_layers": 2, "vocab_size": 4101}, 12345)
    card = ModelCard(text)
    assert card.data.license == "apache-2.0" and card.data.pipeline_tag == "fill-mask"
    assert card.data.to_dict()["randommask"]["data_sha256"] == ["f" * 64]
    for figure in ("7.234", "7.778", "1.380", "8.170", "1.869", "1.348", "1.377", "1.386", "12,345"):
        assert figure in card.text
    assert "1.299" not in card.text  # the plain table sees bases the model does not: not the line
    assert "f" * 64 in card.text and "| 121–150 | 6–14 tokens |" in card.text
    # A per-base loss not below the best counting line of its geometry is said plainly.
    assert "(1.380) is not below the best counting line in that geometry (1.348)" in card.text
    # No evaluation, no manifest: the card says so instead of failing.
    bare = ModelCard(pretraining_card(cfg, HISTORY[:1], None, None, {}, 1))
    assert "No evaluation was logged" in bare.text and "manifest was not readable" in bare.text


def test_the_finetuning_card_states_comparability_and_the_majority_class():
    from randommask.evaluation import gue
    from randommask.finetune.card import finetune_card, majority_reference

    ref = majority_reference([0, 0, 0, 1])
    assert ref["accuracy"] == 0.75 and ref["mcc"] == 0.0
    ran = {"steps": 400, "epochs": 3.0, "evaluations": 2, "best_step": 200, "max_tokens": 98, "precision": "bf16",
           "n_train": 1000, "n_dev": 100, "n_test": 100}
    result = {"dataset": "tf/2", "seed": 1, "protocol": "published", "selection": "dev_loss@eval_steps", "lora": True,
              "hyperparameters": gue.REGISTRY["tf/2"].published(), "max_train": None, "max_eval": None, "ran": ran,
              "test": {"mcc": 0.51234, "f1_macro": 0.7, "accuracy": 0.75}, "dev_best": {"mcc": 0.5, "loss": 0.6}}
    base = {"init_from": "s3://b/run/final", "weights_sha256": "a" * 64,
            "parent": {"run": "rm-s0", "version": "0.1.0", "masking": "randommask", "steps": 16000, "tokens": 10**8}}
    card = ModelCard(finetune_card(result, base, ref, k=4, license_id="apache-2.0"))
    assert card.data.license == "apache-2.0" and "lora-merged" in card.data.tags
    assert "Comparable with the published GUE numbers." in card.text
    assert "pretraining run `rm-s0`" in card.text and "16,000 steps" in card.text and "0.5123" in card.text
    assert "| accuracy | 0.75 | — | 0.75 | — |" in card.text  # the classifier is no better than the majority class
    assert "seq[i:i + 4] for i in range(len(seq) - 3)" in card.text  # the checkpoint's k, not DNABERT's 6
    sub = ModelCard(finetune_card({**result, "max_train": 200}, {**base, "parent": None}, ref, k=6))
    assert "Not comparable with the published GUE numbers: the data were subsampled" in sub.text
    assert "License: not stated" in sub.text
