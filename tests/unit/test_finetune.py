"""GUE registry, CSV validation, and fine-tuning end to end through Ray Tune on the real shared GUE data."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from randommask import KmerTokenizer, gue, storage
from randommask.errors import UserError
from randommask.finetune import finetune, node_checkpoint, resolve_checkpoint, run_trial
from randommask.finetune import protocol
from randommask.finetune.results import aggregate, comparability, markdown
from randommask.finetune.trial import evaluate
from randommask.model import build_mlm

from conftest import SHARED

GUE_DIR = SHARED / "data" / "gue"
BASELINES = SHARED / "data" / "gue-published-baselines.csv"


@pytest.fixture(scope="session")
def gue_dir():
    if not GUE_DIR.exists():
        pytest.skip(f"real GUE data {GUE_DIR} is absent (it ships in ../shared beside the repository)")
    return GUE_DIR


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A tiny model directory as pretraining writes it (model + tokenizer files)."""
    d = tmp_path_factory.mktemp("ckpt") / "final"
    torch.manual_seed(0)
    build_mlm("tiny").save_pretrained(d)
    KmerTokenizer(6).save_pretrained(d)
    return d


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
    assert protocol.lr_factor(0, 50, 1540) == 0 and protocol.lr_factor(50, 50, 1540) == 1
    assert protocol.lr_factor(1540, 50, 1540) == 0
    with pytest.raises(UserError, match="--protocol 'slow'"):
        protocol.plan(tata, "slow")


def test_weight_decay_spares_biases_and_layernorm(checkpoint):
    from transformers import BertForSequenceClassification

    model = BertForSequenceClassification.from_pretrained(checkpoint, num_labels=2)
    decay, rest = protocol.param_groups(model, 0.01)
    names = {id(p): n for n, p in model.named_parameters()}
    assert decay["weight_decay"] == 0.01 and rest["weight_decay"] == 0.0
    assert all("bias" not in names[id(p)] and "LayerNorm" not in names[id(p)] for p in decay["params"])
    assert {names[id(p)] for p in rest["params"]} == {n for n, _ in model.named_parameters()
                                                       if n.endswith("bias") or "LayerNorm" in n}


def test_the_lowest_dev_loss_step_is_what_test_scores(gue_dir, checkpoint, tmp_path):
    """Selection by dev loss: the test metrics are exactly those of the weights at the best step."""
    from transformers import BertForSequenceClassification

    states = {}
    result = run_trial({"dataset": "prom/prom_core_tata", "seed": 0, "checkpoint": str(checkpoint),
                        "gue_dir": str(gue_dir), "out": str(tmp_path), "max_train": 256, "max_eval": 128,
                        "epochs": 6, "lr": 2e-3},
                       on_evaluate=lambda step, model, dev: states.__setitem__(
                           step, {k: v.detach().clone() for k, v in model.state_dict().items()}))
    history = result["history"]
    losses = [h["dev_loss"] for h in history]
    best = history[losses.index(min(losses))]["step"]
    assert result["ran"]["best_step"] == best and sorted(states) == [h["step"] for h in history]
    assert best != history[-1]["step"], "the test needs a run whose best step is not its last"

    enc = KmerTokenizer.from_pretrained(checkpoint)
    seqs, labels = gue.subsample(*gue.read_split(str(gue_dir), "prom/prom_core_tata", "test"), 128, seed=0)
    e = enc.encode_batch(seqs, max_length=result["ran"]["max_tokens"])
    test = (torch.from_numpy(e["input_ids"]), torch.from_numpy(e["attention_mask"]), torch.from_numpy(labels))

    def score(step):
        model = BertForSequenceClassification.from_pretrained(checkpoint, num_labels=2, attn_implementation="sdpa")
        model.load_state_dict(states[step])
        return {k: round(v, 5) for k, v in evaluate(model, *test, torch.device("cpu")).items()}

    assert score(best) == result["test"]
    assert score(history[-1]["step"]) != result["test"]


def test_registry_has_the_28_gue_datasets():
    assert len(gue.REGISTRY) == 28 and len(gue.TASKS) == 7
    classes = {n: d.classes for n, d in gue.REGISTRY.items()}
    assert sum(1 for n in classes if n.startswith("EMP/")) == 10
    assert classes["splice/reconstructed"] == 3 and classes["virus/covid"] == 9
    assert all(c == 2 for n, c in classes.items() if not n.startswith(("splice", "virus")))
    assert gue.REGISTRY["virus/covid"].metric == "f1_macro"
    assert all(d.metric == "mcc" for n, d in gue.REGISTRY.items() if n != "virus/covid")
    assert gue.REGISTRY["prom/prom_core_all"].max_tokens == 67 and gue.REGISTRY["virus/covid"].max_tokens == 512
    published = {line.split(",")[0] for line in BASELINES.read_text().splitlines()[1:]} if BASELINES.exists() else None
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


def test_checkpoint_kinds_resolve(checkpoint, tmp_path):
    assert resolve_checkpoint(str(checkpoint)) == str(checkpoint.resolve())
    run = tmp_path / "run"
    shutil.copytree(checkpoint, run / "step_00000010" / "model")
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
    result = run_trial({"dataset": "prom/prom_core_tata", "seed": 0, "checkpoint": ckpt, "gue_dir": str(gue_dir),
                        "out": str(tmp_path / "out"), "max_train": 64, "max_eval": 64, "epochs": 1})
    assert result["status"] == "ok" and result["ran"]["n_train"] == 64 and -1 <= result["test"]["mcc"] <= 1
    assert (tmp_path / "out" / "trials" / "prom_prom_core_tata__seed0.json").exists()


def test_lora_trains_only_adapters_and_head(gue_dir, checkpoint, tmp_path):
    result = run_trial({"dataset": "mouse/2", "seed": 0, "checkpoint": str(checkpoint), "gue_dir": str(gue_dir),
                        "out": str(tmp_path), "max_train": 64, "max_eval": 64, "epochs": 1, "lora": True})
    assert result["lora"] and result["status"] == "ok"


@pytest.mark.ray
def test_finetune_through_tune_two_at_once_with_results_and_resume(ray_local, gue_dir, checkpoint, tmp_path):
    out = tmp_path / "ft"
    logs = []
    # the published protocol on subsampled data: prom_core_tata 10 epochs of 7 steps, tf/2 3 epochs
    r = finetune(str(checkpoint), str(gue_dir), "tf/2,prom/prom_core_tata", str(out), seeds=2, max_train=200,
                 max_eval=100, cpus_per_trial=1, baselines=str(BASELINES), log=logs.append)
    assert "4 to run" in logs[0]
    assert r["protocol"] == "published" and r["selection"] == "dev_loss@eval_steps" and r["precision"] == "fp32"
    assert "subsampled" in r["not_comparable"]
    assert [row["dataset"] for row in r["datasets"]] == ["tf/2", "prom/prom_core_tata"]
    for row in r["datasets"]:
        assert row["seeds_ok"] == 2 and row["seeds_failed"] == 0
        assert -1 <= row["score_mean"] <= 1 and row["score_std"] >= 0 and len(row["per_seed"]) == 2
        assert "baselines" not in row and "rank" not in row  # subsampled: not comparable with the published runs
    tata = r["datasets"][1]
    assert tata["hyperparameters"] == gue.REGISTRY["prom/prom_core_tata"].published()
    # 200 rows / 32 = 7 steps per epoch, under eval_steps 200: evaluated at each of the 10 epoch ends
    assert tata["ran"][0]["steps"] == 70 and tata["ran"][0]["evaluations"] == 10
    trials = [json.loads(p.read_text()) for p in sorted((out / "trials").glob("*.json"))]
    assert len(trials) == 4
    spans = sorted((t["started"], t["finished"]) for t in trials)
    assert any(b[0] < a[1] for a, b in zip(spans, spans[1:])), "no two trials ran at the same time"
    # The longest trials start first: prom_core_tata's 70 steps before tf/2's 21.
    assert [t["dataset"] for t in sorted(trials, key=lambda t: t["started"])[:2]] == ["prom/prom_core_tata"] * 2
    md = (out / "results.md").read_text()
    assert "| prom/prom_core_tata | mcc |" in md and "±" in md and "overall" in md and "Protocol: **published**" in md
    assert "Published numbers are not shown: the data were subsampled" in md and "DNABERT-2" not in md
    csv_lines = (out / "results.csv").read_text().splitlines()
    assert csv_lines[0].startswith("dataset,task,metric,protocol,score_mean,score_std") and len(csv_lines) == 3
    saved = json.loads((out / "results.json").read_text())
    assert saved["overall"] == pytest.approx(r["overall"]) and "run_dnabert1.sh" in saved["source"]

    # A rerun skips the finished (dataset, seed) pairs and only runs the new seed.
    before = {p.name: p.stat().st_mtime for p in (out / "trials").iterdir()}
    logs.clear()
    r2 = finetune(str(checkpoint), str(gue_dir), "tf/2,prom/prom_core_tata", str(out), seeds=3, max_train=200,
                  max_eval=100, log=logs.append)
    assert "4 already finished, 2 to run" in logs[0]
    assert all((out / "trials" / n).stat().st_mtime == m for n, m in before.items())
    assert all(row["seeds_ok"] == 3 for row in r2["datasets"])
    # ...but never mixes in trials run with other settings or another protocol
    common = dict(seeds=3, max_train=200, max_eval=100)
    with pytest.raises(UserError, match="was run with lr=3e-05, not 0.001; use a new --out"):
        finetune(str(checkpoint), str(gue_dir), "tf/2,prom/prom_core_tata", str(out), lr=1e-3, **common)
    with pytest.raises(UserError, match="was run with protocol=published, not fast; use a new --out"):
        finetune(str(checkpoint), str(gue_dir), "tf/2,prom/prom_core_tata", str(out), protocol="fast", **common)
    with pytest.raises(UserError, match="max_train=200, not 300"):
        finetune(str(checkpoint), str(gue_dir), "tf/2,prom/prom_core_tata", str(out), **{**common, "max_train": 300})


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


@pytest.mark.ray
def test_finetune_from_s3_to_s3_skips_finished_trials_on_rerun(ray_local, gue_dir, checkpoint, s3):
    """The KubeRay path: checkpoint, GUE data and results all on S3, trials fetch the checkpoint
    themselves (they may run on other nodes), and a retried job skips what already finished."""
    bucket = s3.bucket("ft")
    shutil.copytree(checkpoint, bucket / "runs" / "r" / "final")
    shutil.copytree(gue_dir / "mouse" / "2", bucket / "gue" / "mouse" / "2")
    args = dict(seeds=1, max_train=100, max_eval=50, epochs=1, cpus_per_trial=1)
    r = finetune("s3://ft/runs/r/final", "s3://ft/gue", "mouse/2", "s3://ft/out", **args, log=lambda *_: None)
    assert r["datasets"][0]["seeds_ok"] == 1 and r["failed_trials"] == 0
    out = bucket / "out"
    assert (out / "trials" / "mouse_2__seed0.json").is_file()
    assert json.loads((out / "results.json").read_text())["overall"] == pytest.approx(r["overall"])
    assert "| mouse/2 | mcc |" in (out / "results.md").read_text()
    first = (out / "trials" / "mouse_2__seed0.json").read_bytes()
    logs = []
    r2 = finetune("s3://ft/runs/r/final", "s3://ft/gue", "mouse/2", "s3://ft/out", **{**args, "seeds": 2},
                  log=logs.append)
    assert "1 already finished, 1 to run" in logs[0]
    assert (out / "trials" / "mouse_2__seed0.json").read_bytes() == first
    assert r2["datasets"][0]["seeds_ok"] == 2


def test_a_remote_checkpoint_is_fetched_once_per_node_and_again_when_rewritten(checkpoint, s3, tmp_path):
    # through the S3 API, as a run writes it (rclone's own listing cache would hide files made on its disk)
    fs, _ = storage.filesystem("s3://nodeckpt")
    fs.mkdir("nodeckpt")
    fs.put(f"{checkpoint}/", "nodeckpt/run/final/", recursive=True)
    first = node_checkpoint("s3://nodeckpt/run/final")
    assert node_checkpoint("s3://nodeckpt/run/final") == first  # cached on this node
    torch.manual_seed(1)
    build_mlm("tiny").save_pretrained(tmp_path / "new")
    fs.put_file(str(tmp_path / "new" / "model.safetensors"), "nodeckpt/run/final/model.safetensors")  # rewritten
    second = node_checkpoint("s3://nodeckpt/run/final")
    assert second != first
    assert (Path(second) / "model.safetensors").read_bytes() == (tmp_path / "new" / "model.safetensors").read_bytes()
    with pytest.raises(UserError, match="no such checkpoint"):
        node_checkpoint("s3://nodeckpt/absent")


@pytest.mark.ray
def test_failed_trial_is_reported_not_hidden(ray_local, gue_dir, checkpoint, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(checkpoint, broken)
    (broken / "model.safetensors").write_bytes(b"not a safetensors file")
    out = tmp_path / "ft"
    cmd = [sys.executable, "-m", "randommask", "finetune", "--checkpoint", str(broken), "--gue-dir", str(gue_dir),
           "--tasks", "mouse/2", "--seeds", "1", "--max-train", "50", "--epochs", "1", "--out", str(out)]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert res.returncode == 2 and "1 trial(s) failed" in res.stderr
    row = json.loads((out / "results.json").read_text())["datasets"][0]
    assert row["seeds_failed"] == 1 and row["errors"]
    assert "Failed trials" in (out / "results.md").read_text()


def test_all_mode_skips_missing_and_by_name_missing_is_an_error(gue_dir, checkpoint, tmp_path, ray_local):
    partial = tmp_path / "GUE"
    shutil.copytree(gue_dir / "prom" / "prom_core_tata", partial / "prom" / "prom_core_tata")
    with pytest.raises(UserError, match="missing GUE dataset.*tf/0"):
        finetune(str(checkpoint), str(partial), "tf/0,prom/prom_core_tata", str(tmp_path / "a"))
    logs = []
    r = finetune(str(checkpoint), str(partial), "all", str(tmp_path / "b"), seeds=1, max_train=50, max_eval=50,
                 epochs=1, log=logs.append)
    assert "skipping 27 dataset(s)" in logs[0]
    assert [row["dataset"] for row in r["datasets"]] == ["prom/prom_core_tata"]


def test_bad_csv_fails_before_any_trial(gue_dir, checkpoint, tmp_path):
    bad = tmp_path / "GUE"
    shutil.copytree(gue_dir / "mouse" / "2", bad / "mouse" / "2")
    (bad / "mouse" / "2" / "dev.csv").write_text("sequence,label\nACGTACGT,7\n")
    with pytest.raises(UserError, match=r"dev.csv: line 2: label 7 outside 0..1"):
        finetune(str(checkpoint), str(bad), "mouse/2", str(tmp_path / "out"))
    assert not (tmp_path / "out" / "trials").exists()
