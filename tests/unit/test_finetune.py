"""GUE registry, protocols and CSV validation, single fine-tuning trials in this process, results
tables, on the real shared GUE data (fine-tuning through Ray Tune, on S3 and through the CLI is in
tests/integration/test_finetune.py)."""

import json
import shutil

import numpy as np
import pytest
import torch

from conftest import GUE_BASELINES
from randommask import KmerTokenizer
from randommask.common.checkpoints import resolve_checkpoint
from randommask.errors import UserError
from randommask.evaluation import gue
from randommask.finetune import finetune, protocol, run_trial
from randommask.finetune.results import aggregate, comparability, markdown
from randommask.finetune.trial import evaluate
from randommask.training.model import build_mlm
from randommask.training.step import lr_factor, param_groups

# The published protocol, typed in by hand from MAGICS-LAB/DNABERT_2 finetune/scripts/run_dnabert1.sh
# (commit b946321, the k-mer models' script): per group, --num_train_epochs, --max_steps, --warmup_steps,
# --eval_steps, --model_max_length; every group --learning_rate 3e-5, --per_device_train_batch_size 8.
# The README sets the global batch to 32 (8 x 4 GPUs); covid adds --gradient_accumulation_steps 4.
PUBLISHED = {  # group: (epochs, max_steps, warmup_steps, eval_steps, max_length, batch_size)
    "EMP": (3, None, 50, 200, 512, 32),
    "prom/prom_core_all": (4, None, 50, 400, 80, 32), "prom/prom_core_notata": (4, None, 50, 400, 80, 32),
    "prom/prom_core_tata": (10, None, 50, 200, 80, 32),
    "prom/prom_300_all": (4, None, 50, 400, 310, 32), "prom/prom_300_notata": (4, None, 50, 400, 310, 32),
    "prom/prom_300_tata": (10, None, 50, 200, 310, 32),
    "splice/reconstructed": (5, None, 50, 200, 410, 32),
    "virus/covid": (9, None, 50, 200, 1024, 128),
    "mouse": (5, 1000, 30, 200, 110, 32),
    "tf": (3, None, 30, 200, 110, 32),
}


def test_registry_equals_the_published_scripts():
    keys = ("epochs", "max_steps", "warmup_steps", "eval_steps", "max_length", "batch_size")
    for name, ds in gue.REGISTRY.items():
        group = name if name in PUBLISHED else name.split("/")[0]
        want = dict(zip(keys, PUBLISHED[group]), lr=3e-5, weight_decay=0.01, precision="fp16")
        assert ds.published() == want, name
    assert "run_dnabert1.sh" in gue.PUBLISHED_SOURCE


def test_protocols_resolve_overrides_and_schedules():
    tata = gue.REGISTRY["prom/prom_core_tata"]
    assert protocol.plan(tata).protocol == "published" and protocol.plan(tata, "fast").selection == "dev_metric@epoch"
    custom = protocol.plan(gue.REGISTRY["mouse/0"], "published", epochs=2)
    assert custom.protocol == "custom" and custom["epochs"] == 2 and custom["max_steps"] is None
    assert custom.selection == "dev_loss@eval_steps"
    # full size: Trainer's evaluations, every eval_steps only (4904 rows / 32 = 154 steps x 10 epochs)
    full = protocol.schedule(protocol.plan(tata), 4904)
    assert (full.steps_per_epoch, full.total_steps) == (154, 1540) and full.eval_at == tuple(range(200, 1540, 200))
    # mouse: max_steps wins over epochs, whatever the data size
    assert protocol.schedule(protocol.plan(gue.REGISTRY["mouse/2"]), 2620).total_steps == 1000
    # subsampled below one interval: still evaluates at every epoch end (and so at the end)
    small = protocol.schedule(protocol.plan(tata), 256, subsampled=True)
    assert small.eval_at == (8, 16, 24, 32, 40, 48, 56, 64, 72, 80)
    assert protocol.schedule(protocol.plan(tata, "fast"), 4904).eval_at == tuple(range(154, 1541, 154))
    # Trainer's schedule: the first step at factor 0, linear warmup to 1, linear decay to 0 at the end
    assert lr_factor(0, 50, 1540, trainer_warmup=True) == 0 and lr_factor(50, 50, 1540, trainer_warmup=True) == 1
    assert lr_factor(1540, 50, 1540, trainer_warmup=True) == 0
    with pytest.raises(UserError, match="--protocol 'slow'"):
        protocol.plan(tata, "slow")


def test_weight_decay_spares_biases_and_layernorm(tiny_checkpoint):
    from transformers import BertForSequenceClassification

    model = BertForSequenceClassification.from_pretrained(tiny_checkpoint, num_labels=2)
    decay, rest = param_groups(model, 0.01)
    names = {id(p): n for n, p in model.named_parameters()}
    assert decay["weight_decay"] == 0.01 and rest["weight_decay"] == 0.0
    assert all("bias" not in names[id(p)] and "LayerNorm" not in names[id(p)] for p in decay["params"])
    assert {names[id(p)] for p in rest["params"]} == {n for n, _ in model.named_parameters()
                                                       if n.endswith("bias") or "LayerNorm" in n}


def _test_split(gue_dir, checkpoint, dataset, rows, max_tokens):
    enc = KmerTokenizer.from_pretrained(checkpoint)
    seqs, labels = gue.subsample(*gue.read_split(str(gue_dir), dataset, "test"), rows, seed=0)
    e = enc.encode_batch(seqs, max_length=max_tokens)
    return torch.from_numpy(e["input_ids"]), torch.from_numpy(e["attention_mask"]), torch.from_numpy(labels)


def _saved_model_scores(model_dir, test):
    """The test scores of a saved model, loaded as anyone would load it (no peft, no randommask)."""
    from transformers import AutoModelForSequenceClassification

    model = AutoModelForSequenceClassification.from_pretrained(model_dir)
    return {k: round(v, 5) for k, v in evaluate(model, *test, torch.device("cpu")).items()}


def test_the_lowest_dev_loss_step_is_what_test_scores(gue_dir, tiny_checkpoint, tmp_path):
    """Selection by dev loss: the test metrics are exactly those of the weights at the best step, and
    the saved model (--save-models) is that model, with a card that says so."""
    from huggingface_hub import ModelCard
    from transformers import BertForSequenceClassification

    from randommask.common.checkpoints import weights_digest

    states = {}
    result = run_trial({"dataset": "prom/prom_core_tata", "seed": 0, "checkpoint": str(tiny_checkpoint),
                        "gue_dir": str(gue_dir), "out": str(tmp_path), "max_train": 256, "max_eval": 128,
                        "epochs": 6, "lr": 2e-3, "save_model": True},
                       on_evaluate=lambda step, model, dev: states.__setitem__(
                           step, {k: v.detach().clone() for k, v in model.state_dict().items()}))
    history = result["history"]
    losses = [h["dev_loss"] for h in history]
    best = history[losses.index(min(losses))]["step"]
    assert result["ran"]["best_step"] == best and sorted(states) == [h["step"] for h in history]
    assert best != history[-1]["step"], "the test needs a run whose best step is not its last"

    test = _test_split(gue_dir, tiny_checkpoint, "prom/prom_core_tata", 128, result["ran"]["max_tokens"])

    def score(step):
        model = BertForSequenceClassification.from_pretrained(tiny_checkpoint, num_labels=2, attn_implementation="sdpa")
        model.load_state_dict(states[step])
        return {k: round(v, 5) for k, v in evaluate(model, *test, torch.device("cpu")).items()}

    assert score(best) == result["test"]
    assert score(history[-1]["step"]) != result["test"]
    saved = tmp_path / "models" / "prom_prom_core_tata__seed0"
    assert result["model"] == str(saved) and _saved_model_scores(saved, test) == result["test"]
    card = ModelCard.load(saved / "README.md")
    assert card.data.pipeline_tag == "text-classification" and card.data.license == "other"
    assert {(r.metric_type, r.metric_value) for r in card.data.eval_results} == {
        (m, result["test"][m]) for m in ("mcc", "f1_macro", "accuracy")}
    block = card.data.to_dict()["randommask"]
    assert block["best_step"] == best and block["base"]["weights_sha256"] == weights_digest(str(tiny_checkpoint))
    assert f"step {best:,} of" in card.text and "majority class" in card.text


def gc_rich_gue(root, rows=(128, 48, 64), seed=0):
    """A GUE-shaped prom/prom_core_tata of 70 bp rows: label 1 rows are 80% G or C, label 0 rows 50%: a
    tiny model learns it within a few epochs, so its dev metric moves."""
    rng = np.random.default_rng(seed)
    d = root / "prom" / "prom_core_tata"
    d.mkdir(parents=True)
    for split, n in zip(gue.SPLITS, rows):
        lines = ["sequence,label"]
        for label in rng.integers(0, 2, n):
            gc = 0.8 if label else 0.5
            seq = "".join(rng.choice(list("ACGT"), 70, p=[(1 - gc) / 2, gc / 2, gc / 2, (1 - gc) / 2]))
            lines.append(f"{seq},{label}")
        (d / f"{split}.csv").write_text("\n".join(lines) + "\n")
    return root


def test_fast_keeps_the_best_dev_metric_step(tiny_checkpoint, tmp_path):
    """Selection by the dev metric at each epoch's end: the best step is the first with the highest dev
    MCC (not the lowest dev loss, not the last), and the test metrics are those of its weights."""
    from transformers import BertForSequenceClassification

    gue_dir = gc_rich_gue(tmp_path / "gue", seed=5)  # dev MCC 1.0 first at step 28, again at 32 (lowest loss)
    states, threads = {}, torch.get_num_threads()
    try:  # one thread: the same trajectory on any machine
        result = run_trial({"dataset": "prom/prom_core_tata", "seed": 0, "checkpoint": str(tiny_checkpoint),
                            "gue_dir": str(gue_dir), "out": str(tmp_path), "epochs": 8, "lr": 1e-2,
                            "protocol": "fast", "threads": 1},
                           on_evaluate=lambda step, model, dev: states.__setitem__(
                               step, {k: v.detach().clone() for k, v in model.state_dict().items()}))
    finally:
        torch.set_num_threads(threads)
    history = result["history"]
    assert result["selection"] == "dev_metric@epoch" and [h["step"] for h in history] == list(range(4, 33, 4))
    mccs, losses = [h["dev_mcc"] for h in history], [h["dev_loss"] for h in history]
    best = history[mccs.index(max(mccs))]["step"]  # the first of equals, as Trainer keeps
    assert mccs.count(max(mccs)) > 1, f"the test needs a tie for the best dev metric: {history}"
    assert result["ran"]["best_step"] == best and result["dev_best"]["mcc"] == max(mccs)
    assert best not in (history[0]["step"], history[-1]["step"], history[losses.index(min(losses))]["step"]), \
        f"the test needs a run whose best dev metric is not its first, last or lowest-loss step: {history}"
    test = _test_split(gue_dir, tiny_checkpoint, "prom/prom_core_tata", None, result["ran"]["max_tokens"])
    model = BertForSequenceClassification.from_pretrained(tiny_checkpoint, num_labels=2, attn_implementation="sdpa")
    model.load_state_dict(states[best])
    assert {k: round(v, 5) for k, v in evaluate(model, *test, torch.device("cpu")).items()} == result["test"]


def test_registry_has_the_28_gue_datasets():
    assert len(gue.REGISTRY) == 28 and len({d.task for d in gue.REGISTRY.values()}) == 7
    classes = {n: d.classes for n, d in gue.REGISTRY.items()}
    assert sum(1 for n in classes if n.startswith("EMP/")) == 10
    assert classes["splice/reconstructed"] == 3 and classes["virus/covid"] == 9
    assert all(c == 2 for n, c in classes.items() if not n.startswith(("splice", "virus")))
    assert gue.REGISTRY["virus/covid"].metric == "f1_macro"
    assert all(d.metric == "mcc" for n, d in gue.REGISTRY.items() if n != "virus/covid")
    assert gue.REGISTRY["prom/prom_core_all"].max_tokens == 67 and gue.REGISTRY["virus/covid"].max_tokens == 512
    published = {line.split(",")[0] for line in GUE_BASELINES.read_text().splitlines()[1:]} if GUE_BASELINES.exists() else None
    if published:
        assert published == set(gue.REGISTRY)
    assert gue.resolve_names("tf,prom/prom_core_all")[0] == ["tf/0", "tf/1", "tf/2", "tf/3", "tf/4", "prom/prom_core_all"]
    with pytest.raises(UserError, match="unknown GUE dataset"):
        gue.resolve_names("prom/prom_core_everything")


@pytest.mark.parametrize("content, message", [
    ("", "empty file"),
    ("seq,lab\nACGT,0\n", "line 1: expected the header 'sequence,label'"),
    ("sequence,label\nACGT,0\nACGT,x\n", "line 3: label 'x' is not an integer"),
    ("sequence,label\nACGT,0\nACGT,2\n", "line 3: label 2 outside 0..1"),
    ("sequence,label\nACGT\n", "line 2: missing label"),
    ("sequence,label\n,1\n", "line 2: empty sequence"),
    ("sequence,label\nACGT,1\nMKVLE,0\n", "line 3: non-DNA character"),
    ("sequence,label\n", "no rows after the header"),
])
def test_malformed_csv_names_file_and_line(tmp_path, content, message):
    d = tmp_path / "prom" / "prom_core_tata"
    d.mkdir(parents=True)
    (d / "train.csv").write_text(content)
    with pytest.raises(UserError) as err:
        gue.read_split(str(tmp_path), "prom/prom_core_tata", "train")
    assert message in str(err.value) and "train.csv" in str(err.value)


def test_real_shared_csvs_validate(gue_dir):
    seqs, labels = gue.read_split(str(gue_dir), "tf/0", "dev")
    assert len(seqs) == 1000 and set(labels.tolist()) == {0, 1} and all(len(s) == 101 for s in seqs)


def test_checkpoint_kinds_resolve(tiny_checkpoint, tmp_path):
    assert resolve_checkpoint(str(tiny_checkpoint)) == str(tiny_checkpoint.resolve())
    run = tmp_path / "run"
    shutil.copytree(tiny_checkpoint, run / "step_00000010" / "model")
    assert resolve_checkpoint(str(run)).endswith("step_00000010/model")  # a run without final/: latest checkpoint
    with pytest.raises(UserError, match="not a model directory"):
        resolve_checkpoint(str(tmp_path))


def test_dnabert_format_directory_fine_tunes(gue_dir, tmp_path):
    """DNABERT's released checkpoints: config.json (BertForMaskedLM), weights and vocab.txt, no
    tokenizer_config: k is inferred from the vocabulary, as DNABERT does."""
    d = tmp_path / "dnabert6"
    torch.manual_seed(1)
    model = build_mlm("tiny")
    model.save_pretrained(d)
    (d / "vocab.txt").write_text("\n".join(KmerTokenizer(6).vocab) + "\n")
    cfg = json.loads((d / "config.json").read_text())
    cfg.pop("kmer", None)
    (d / "config.json").write_text(json.dumps(cfg))
    ckpt = resolve_checkpoint(str(d))
    seen = {}
    # a rate so small that AdamW moves no weight by more than about 1e-6 a step: the encoder the
    # trial evaluates is the directory's own, a fresh initialization (a silent fallback) is not
    result = run_trial({"dataset": "prom/prom_core_tata", "seed": 0, "checkpoint": ckpt, "gue_dir": str(gue_dir),
                        "out": str(tmp_path / "out"), "max_train": 64, "max_eval": 64, "epochs": 1, "lr": 1e-6},
                       on_evaluate=lambda step, m, dev: seen.setdefault("state", {k: v.detach().clone()
                                                                                  for k, v in m.state_dict().items()}))
    assert result["status"] == "ok" and result["ran"]["n_train"] == 64 and -1 <= result["test"]["mcc"] <= 1
    assert (tmp_path / "out" / "trials" / "prom_prom_core_tata__seed0.json").exists()
    saved = {k: v for k, v in model.state_dict().items() if k.startswith("bert.")}  # what the directory holds
    assert len(saved) > 10 and all(k in seen["state"] for k in saved)
    for key, want in saved.items():
        assert torch.allclose(seen["state"][key], want, atol=1e-4), key
    torch.manual_seed(0)
    fresh = build_mlm("tiny").state_dict()
    assert not torch.allclose(fresh["bert.embeddings.word_embeddings.weight"], saved["bert.embeddings.word_embeddings.weight"],
                              atol=1e-2)


def test_lora_trains_only_adapters_and_head(gue_dir, tiny_checkpoint, tmp_path):
    result = run_trial({"dataset": "mouse/2", "seed": 0, "checkpoint": str(tiny_checkpoint), "gue_dir": str(gue_dir),
                        "out": str(tmp_path), "max_train": 64, "max_eval": 64, "epochs": 1, "lora": True,
                        "save_model": True})
    assert result["lora"] and result["status"] == "ok"
    # saved with the adapters merged: a plain BERT classifier that scores what the trial scored
    test = _test_split(gue_dir, tiny_checkpoint, "mouse/2", 64, result["ran"]["max_tokens"])
    assert _saved_model_scores(result["model"], test) == result["test"]
    assert "adapter_config.json" not in {p.name for p in (tmp_path / "models" / "mouse_2__seed0").iterdir()}


def test_published_numbers_stand_only_beside_published_results():
    published = {"tf/2": {"DNABERT-6mer": 0.9, "DNABERT-2": 0.5}}
    trial = {"dataset": "tf/2", "seed": 0, "status": "ok", "test": {"mcc": 0.6, "f1_macro": 0.8, "accuracy": 0.8},
             "hyperparameters": gue.REGISTRY["tf/2"].published(), "ran": {"steps": 1782}}
    run = {"protocol": "published", "selection": "dev_loss@eval_steps", "precision": "fp32",
           "not_comparable": comparability("published", None, None)}
    shown = aggregate([trial], published, "ckpt", run)["datasets"][0]
    assert shown["baselines"] == published["tf/2"] and (shown["rank"], shown["rank_of"]) == (2, 3)
    assert "DNABERT-6mer" in markdown(aggregate([trial], published, "ckpt", run))
    for name, why in (("fast", "once per epoch"), ("custom", "custom protocol")):
        hidden = aggregate([trial], published, "ckpt", {**run, "protocol": name, "not_comparable":
                                                         comparability(name, None, None)})
        assert "baselines" not in hidden["datasets"][0] and why in hidden["not_comparable"]
        assert "Published numbers are not shown" in markdown(hidden) and "DNABERT-6mer" not in markdown(hidden)


def test_bad_csv_fails_before_any_trial(gue_dir, tiny_checkpoint, tmp_path):
    bad = tmp_path / "GUE"
    shutil.copytree(gue_dir / "mouse" / "2", bad / "mouse" / "2")
    (bad / "mouse" / "2" / "dev.csv").write_text("sequence,label\nACGTACGT,7\n")
    with pytest.raises(UserError, match=r"dev.csv: line 2: label 7 outside 0..1"):
        finetune(str(tiny_checkpoint), str(bad), "mouse/2", str(tmp_path / "out"))
    assert not (tmp_path / "out" / "trials").exists()


# ---- protocol.plan / schedule / better, by hand on a made-up dataset (no trial: fast) -----------------

def _ds(max_steps=None, batch_size=8):
    return gue.GueDataset(name="made/up", task="t", classes=2, length_bp=70, metric="mcc", epochs=3, eval_steps=7,
                          max_length=30, warmup_steps=5, max_steps=max_steps, lr=2e-5, batch_size=batch_size)


def test_a_plan_is_the_published_values_until_an_override_makes_it_custom():
    p = protocol.plan(_ds(max_steps=40))
    assert (p.protocol, p.selection) == ("published", "dev_loss@eval_steps")
    assert p.hyperparameters == {"epochs": 3, "max_steps": 40, "warmup_steps": 5, "eval_steps": 7, "lr": 2e-5,
                                 "batch_size": 8, "max_length": 30, "weight_decay": 0.01, "precision": "fp16"}
    fast = protocol.plan(_ds(max_steps=40), "fast")
    assert (fast.protocol, fast.selection, fast["max_steps"]) == ("fast", "dev_metric@epoch", 40)
    # each override alone: custom, the others as published; only --epochs drops max_steps
    lr = protocol.plan(_ds(max_steps=40), "fast", lr=1)
    assert (lr.protocol, lr.selection, lr["lr"], lr["epochs"], lr["max_steps"]) == ("custom", "dev_metric@epoch", 1.0, 3, 40)
    assert type(lr["lr"]) is float and type(protocol.plan(_ds())["lr"]) is float
    bs = protocol.plan(_ds(max_steps=40), batch_size=16)
    assert (bs.protocol, bs["batch_size"], bs["max_steps"], bs["lr"]) == ("custom", 16, 40, 2e-5)
    assert "XXbatch_sizeXX" not in bs.hyperparameters and "BATCH_SIZE" not in bs.hyperparameters
    ep = protocol.plan(_ds(max_steps=40), epochs=2)
    assert (ep.protocol, ep.selection, ep["epochs"], ep["max_steps"], ep["batch_size"]) == (
        "custom", "dev_loss@eval_steps", 2, None, 8)
    assert set(ep.hyperparameters) == set(p.hyperparameters)
    with pytest.raises(UserError, match="--protocol 'Fast': choose one of published, fast"):
        protocol.plan(_ds(), "Fast")


@pytest.mark.parametrize("max_steps,n_train,protocol_name,subsampled,want", [
    # 50 rows / 8 = 6.25 -> 7 steps an epoch, x 3 epochs = 21; the dev loss every 7 steps, 21 included
    (None, 50, "published", False, (7, 21, 3, (7, 14, 21))),
    (None, 48, "published", False, (6, 18, 3, (7, 14))),  # 48 / 8 = 6 exactly
    # max_steps wins over epochs: 20 steps (epochs 3 end at 7, 14 and, cut short, 20); 30 steps: 5 epochs
    (20, 50, "published", False, (7, 20, 3, (7, 14))),
    (30, 50, "published", False, (7, 30, 5, (7, 14, 21, 28))),
    (None, 50, "fast", False, (7, 21, 3, (7, 14, 21))),
    (20, 50, "fast", False, (7, 20, 3, (7, 14, 20))),
    (30, 50, "fast", True, (7, 30, 5, (7, 14, 21, 28, 30))),
    # subsampled, epochs (3 steps) shorter than the interval (7): also every epoch end
    (None, 20, "published", True, (3, 9, 3, (3, 6, 7, 9))),
    (None, 20, "published", False, (3, 9, 3, (7,))),
    # an epoch exactly one interval long: the interval's steps only (not the cut-short end at 20)
    (20, 56, "published", True, (7, 20, 3, (7, 14))),
])
def test_a_schedule_counts_steps_and_evaluations_as_trainer_does(max_steps, n_train, protocol_name, subsampled, want):
    s = protocol.schedule(protocol.plan(_ds(max_steps=max_steps), protocol_name), n_train, subsampled=subsampled)
    assert (s.steps_per_epoch, s.total_steps, s.epochs, s.eval_at) == want


def test_better_compares_the_dev_loss_or_the_metric_and_ties_keep_the_earlier_step():
    published, fast = protocol.plan(_ds()), protocol.plan(_ds(), "fast")
    best = {"loss": 0.5, "mcc": 0.3}
    assert protocol.better(published, {"loss": 0.4, "mcc": 0.1}, None, "mcc")
    assert protocol.better(published, {"loss": 0.4, "mcc": 0.1}, best, "mcc")  # lower loss wins, whatever the mcc
    assert not protocol.better(published, {"loss": 0.6, "mcc": 0.9}, best, "mcc")
    assert not protocol.better(published, {"loss": 0.5, "mcc": 0.9}, best, "mcc")  # a tie keeps the earlier
    assert protocol.better(fast, {"loss": 0.9, "mcc": 0.4}, best, "mcc")  # higher metric wins, whatever the loss
    assert not protocol.better(fast, {"loss": 0.1, "mcc": 0.2}, best, "mcc")
    assert not protocol.better(fast, {"loss": 0.1, "mcc": 0.3}, best, "mcc")
