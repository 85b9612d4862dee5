"""Pretraining on Ray Train: L0 sanity, outputs, stop-and-resume, storage that cannot be used (bad
configs, which fail before anything starts, are in tests/unit/test_pretrain.py)."""

import json
import os
import shutil

import pytest

from conftest import REPO, jsonl, load_tiny
from randommask.data.prepare import read_manifest
from randommask.errors import UserError
from randommask.training.config import load_config
from randommask.training.driver import pretrain
from randommask.training.masking import make_masker

pytestmark = pytest.mark.ray
K3 = REPO / "jobs" / "configs" / "collapse-cpu-k3.yaml"


def expected_boundary(cfg, step):
    return make_masker(cfg.masking.strategy, cfg.data.k, **cfg.masking.params()).span_bounds(step - 1)[1]


def test_tiny_run_writes_metrics_floors_and_a_loadable_model(tiny_run):
    from transformers import AutoModelForMaskedLM, AutoTokenizer

    run, summary, cfg = tiny_run  # the tiny config pretrained once for the session (conftest.py)
    m = jsonl(run / "metrics.jsonl")
    assert summary["finished"] and m[-1]["step"] == 150 and summary["tokens"] == 150 * 32 * 125
    assert [x["step"] for x in m] == list(range(5, 151, 5))
    for x in m:
        assert x["span_max"] == expected_boundary(cfg, x["step"]) and x["span_min"] == 6
        assert {"loss", "acc", "mask_loss", "mask_acc", "lr", "tokens_per_s", "masked_fraction", "data_wait"} <= set(x)
        assert 0 <= x["mask_acc"] <= 1 and x["mask_loss"] > 0
    evals = [x for x in m if "eval_span_k_loss" in x]
    assert [x["step"] for x in evals] == [50, 100, 150]
    for x in evals:
        assert {f"eval_span_{s}_{key}" for s in ("k", "2k")
                for key in ("loss", "acc", "mask_loss", "mask_acc", "base_loss")} <= set(x)
        assert 1.0 < x["eval_span_k_base_loss"] < 1.45 and 1.0 < x["eval_span_2k_base_loss"] < 1.45  # chance: 1.386
    assert {6, 8, 10, 12, 14} == {x["span_max"] for x in m}
    floors = json.loads((run / "floors.json").read_text())
    assert summary["floors"] == floors and floors["context_free"] == pytest.approx(8.17, abs=0.03)
    assert {"overlap_only_span_k", "overlap_only_span_2k", "base_table"} <= set(floors)
    assert summary["eval_span_k_base_loss"] == evals[-1]["eval_span_k_base_loss"]
    assert summary["eval_span_k_mask_loss"] == evals[-1]["eval_span_k_mask_loss"]
    model = AutoModelForMaskedLM.from_pretrained(run / "final")
    tok = AutoTokenizer.from_pretrained(run / "final")
    assert model.config.vocab_size == 4101 and tok.convert_tokens_to_ids("AAAAAA") == 5
    assert (run / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "secret" not in (run / "config.yaml").read_text().lower()
    assert [e["event"] for e in jsonl(run / "events.jsonl")] == ["start"]


def test_the_final_model_has_a_hugging_face_model_card_with_its_figures(tiny_run):
    from huggingface_hub import ModelCard
    from transformers import pipeline

    run, summary, cfg = tiny_run
    card = ModelCard.load(run / "final" / "README.md")
    assert card.data.library_name == "transformers" and card.data.pipeline_tag == "fill-mask"
    assert card.data.license == "other" and "randommask" in card.data.tags
    meta = card.data.to_dict()["randommask"]
    assert meta["steps"] == 150 and meta["tokens"] == summary["tokens"] and meta["masking"] == "randommask"
    manifest = read_manifest(cfg.data.prepared)
    assert meta["data_sha256"] == [s["sha256"] for s in manifest["sources"]]
    text = card.text
    floors, last = summary["floors"], jsonl(run / "metrics.jsonl")[-1]
    # the final evaluation beside its floors and references, as the run logged them
    for v in (last["eval_span_k_mask_loss"], last["eval_span_2k_mask_loss"], last["eval_span_k_base_loss"],
              floors["context_free"], floors["overlap_only_span_k"], min(floors["base_table"].values())):
        assert f"{v:.3f}" in text
    assert manifest["sources"][0]["sha256"] in text and "AutoModelForMaskedLM" in text
    assert "| 121–150 | 6–14 tokens |" in text  # the last RandomMask phase of the tiny config
    # the card is the directory's README: transformers still loads the model beside it
    fill = pipeline("fill-mask", model=str(run / "final"), tokenizer=str(run / "final"))
    assert len(fill("AAAAAA [MASK] AAAAAA")) == 5


def test_pretraining_continues_from_a_checkpoint_on_s3_and_its_card_records_the_lineage(tiny_run, s3, tmp_path):
    import torch
    from huggingface_hub import ModelCard
    from transformers import BertForMaskedLM

    from randommask.common.checkpoints import weights_digest

    run, _, cfg = tiny_run
    shutil.copytree(run / "final", s3.bucket("models") / "tiny-final")  # rclone serves the folder as objects
    uri = "s3://models/tiny-final"
    # A learning rate of 1e-9 leaves the weights where they started: the run must start from the S3 ones.
    cont = load_tiny(cfg.data.prepared, tmp_path, "continued", f"model.init_from={uri}", "optim.lr=1e-9",
                     "optim.max_steps=10", "masking.phase_ends=[2,4,6,8,10]")
    assert pretrain(cont)["finished"]
    start = BertForMaskedLM.from_pretrained(run / "final").state_dict()
    end = BertForMaskedLM.from_pretrained(tmp_path / "continued" / "final").state_dict()
    assert all(torch.allclose(start[k], end[k], atol=1e-5) for k in start)
    meta = ModelCard.load(tmp_path / "continued" / "final" / "README.md").data.to_dict()["randommask"]
    assert meta["init_from"] == uri
    assert meta["lineage"]["weights_sha256"] == weights_digest(str(run / "final"))
    assert meta["lineage"]["parent"]["run"] == "outputs" and meta["lineage"]["parent"]["steps"] == 150
    with pytest.raises(UserError, match=r"^model.init_from s3://models/none: no such checkpoint"):
        pretrain(load_tiny(cfg.data.prepared, tmp_path, "missing", "model.init_from=s3://models/none"))
    assert not (tmp_path / "missing").exists()


def test_l0_sanity_the_k3_positive_control_learns_from_context(prepared, tmp_path):
    """L0 sanity, the BioNeMo way but with a floor computed from the data instead of a constant: the
    k=3 positive control (span masking hides one base) must read the hidden base off its neighbours,
    so its [MASK]-only validation loss ends far below the context-free floor (the 3-mer entropy,
    ~4.12 nats on E. coli). Measured on the 2-core machine: about 1.7 after 1,200 steps; the margin
    asserted (1.0 nat) leaves room for a later escape from the plateau."""
    cfg = load_config(K3, [f"data.prepared={prepared}", f"run.storage_path={tmp_path}", "run.name=l0",
                           "observability.progress=false", "optim.max_steps=1200", "optim.decay_start=900",
                           "run.eval_every=300", "run.checkpoint_every=1200", "run.eval_windows=1024",
                           "scaling.torch_threads=2"])  # the suite's longest test: both cores, as the demo
    summary = pretrain(cfg)
    floors = summary["floors"]
    assert floors["k"] == 3 and floors["context_free"] == pytest.approx(4.12, abs=0.02)
    assert summary["eval_span_k_mask_loss"] < floors["context_free"] - 1.0, summary
    assert summary["eval_span_k_mask_acc"] > 0.25  # chance among the 4 bases the hidden one can be


@pytest.mark.parametrize("config", ["collapse-cpu.yaml", "collapse-cpu-k3.yaml", "demo-cpu.yaml"])
def test_cpu_configs_run_from_the_command_line_and_log_mask_only_losses(prepared, tmp_path, capsys, config):
    """The shipped CPU configs as users run them (`randommask pretrain --config ... --set
    data.prepared=...`), shortened to 20 steps: valid, and their metrics carry the [MASK]-only figures."""
    from randommask.cli import main

    code = main(["pretrain", "--config", str(REPO / "jobs" / "configs" / config), "--set", f"data.prepared={prepared}",
                 "--set", f"run.storage_path={tmp_path}", "--set", "optim.max_steps=20", "--set", "run.eval_every=10",
                 "--set", "run.log_every=10", "--set", "run.eval_windows=64", "--set", "observability.progress=false"])
    assert code == 0
    name = load_config(REPO / "jobs" / "configs" / config).run.name
    m = jsonl(tmp_path / name / "metrics.jsonl")
    assert [x["step"] for x in m] == [10, 20] and all(x["eval_span_k_mask_loss"] > 0 for x in m)
    assert "context-free floor" in capsys.readouterr().out


def test_stop_and_resume_by_name_sees_the_same_batches(prepared, tmp_path):
    common = ["optim.max_steps=40", "run.log_every=1", "run.checkpoint_every=10", "run.eval_every=20",
              "masking.phase_ends=[8,16,24,32,40]"]
    pretrain(load_tiny(prepared, tmp_path, "straight", *common))
    pretrain(load_tiny(prepared, tmp_path, "stopped", *common, "run.stop_after=17"))
    first = jsonl(tmp_path / "stopped" / "metrics.jsonl")
    assert first[-1]["step"] == 17 and not (tmp_path / "stopped" / "final").exists()
    # the checkpoint copied elsewhere continues under a new name (a run moved to another machine)
    moved = shutil.copytree(tmp_path / "stopped" / "step_00000017", tmp_path / "elsewhere" / "step_00000017")
    assert pretrain(load_tiny(prepared, tmp_path, "moved", *common, f"run.resume_from={moved}"))["finished"]
    summary = pretrain(load_tiny(prepared, tmp_path, "stopped", *common))  # same name: resumes
    assert summary["finished"]
    a = {x["step"]: x for x in jsonl(tmp_path / "straight" / "metrics.jsonl")}
    for run in ("stopped", "moved"):
        b = {x["step"]: x for x in jsonl(tmp_path / run / "metrics.jsonl")}
        assert sorted(a) == sorted(b) == list(range(1, 41))
        for step in range(18, 41):  # after the resume: the batches, masks and updates of an uninterrupted run
            assert b[step]["batch_crc"] == a[step]["batch_crc"], (run, step)
            assert b[step]["loss"] == pytest.approx(a[step]["loss"], abs=1e-4), (run, step)
            assert b[step]["span_max"] == a[step]["span_max"]
    # ... but not with other training settings, and not from something that is not a checkpoint
    with pytest.raises(UserError, match=r"trained with other settings \(optim.lr: .* -> 0.0123\)"):
        pretrain(load_tiny(prepared, tmp_path, "mixed", *common, f"run.resume_from={moved}", "optim.lr=0.0123"))
    with pytest.raises(UserError, match="no trainer_state.pt there"):
        pretrain(load_tiny(prepared, tmp_path, "mixed", *common, f"run.resume_from={tmp_path / 'elsewhere'}"))
    assert not (tmp_path / "mixed").exists()
    with pytest.raises(UserError, match=r"run stopped .* was started with other settings \(optim.lr: .* -> 0.0123\)"):
        pretrain(load_tiny(prepared, tmp_path, "stopped", *common, "optim.lr=0.0123"))  # a resume by name too
    events = jsonl(tmp_path / "stopped" / "events.jsonl")
    assert [(e["event"], e["step"]) for e in events] == [("start", 0), ("resume", 17)]


def test_unreachable_storage_and_missing_data_fail_before_anything_is_written(prepared, tmp_path, s3):
    with pytest.raises(UserError, match="cannot reach the storage endpoint"):
        cfg = load_tiny(prepared, "s3://runs/x", "nowhere")
        os.environ["AWS_ENDPOINT_URL"], saved = f"http://127.0.0.1:{s3.port + 7}", os.environ["AWS_ENDPOINT_URL"]
        try:
            pretrain(cfg)
        finally:
            os.environ["AWS_ENDPOINT_URL"] = saved
    with pytest.raises(UserError, match="bucket 'no-such-bucket' does not exist"):
        pretrain(load_tiny(prepared, "s3://no-such-bucket/runs", "x"))
    with pytest.raises(UserError, match="no manifest.json"):
        pretrain(load_tiny(str(tmp_path / "nothing"), tmp_path / "runs", "x"))
    with pytest.raises(UserError, match="fewer than optim.batch_size"):
        pretrain(load_tiny(prepared, tmp_path / "runs", "x", "optim.batch_size=100000"))
    assert not (tmp_path / "runs").exists()
