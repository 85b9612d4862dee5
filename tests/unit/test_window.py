"""The trained window (data.window): recorded in config.json, read back wherever the directory is,
refused in one line beyond it unless allowed, and absent from any other checkpoint without changing
what it does. The platform's own checkpoints and every command's default window on a copied final/
are in tests/integration/test_window.py."""

import json
import shutil
from pathlib import Path

import pytest

from conftest import run_main
from randommask.data import window
from randommask.data.tokenizer import KmerTokenizer
from randommask.errors import UserError


def annotated(src: Path, dest: Path, window_bp: int) -> Path:
    """A copy of the checkpoint ``src`` whose config records ``window_bp``, as pretraining writes it."""
    from transformers import BertConfig

    shutil.copytree(src, dest)
    config = BertConfig.from_pretrained(dest)
    window.record(config, KmerTokenizer(6), window_bp)
    config.save_pretrained(dest)
    return dest


@pytest.mark.parametrize("k,stride,positions,bases", [(6, 1, 512, 515), (6, 1, 125, 128), (6, 1, 61, 64),
                                                      (6, 6, 10, 48), (6, 3, 10, 27), (3, 1, 3, 3)])
def test_bases_that_fit_positions_and_positions_for_bases(k, stride, positions, bases):
    # by hand: positions - 2 k-mers, the last starting (positions - 3) * stride bases in, k long
    tok = KmerTokenizer(k, stride)
    assert tok.bases_for(positions) == bases and tok.num_tokens(bases) == positions
    assert tok.num_tokens(bases + stride) == positions + 1  # one more k-mer needs one more position


def test_too_few_positions_for_a_kmer_is_refused():
    with pytest.raises(UserError, match="2 positions hold no k-mer"):
        KmerTokenizer(6).bases_for(2)


def test_the_window_is_in_config_json_and_read_back_from_a_copy(tiny_checkpoint, tmp_path):
    d = annotated(tiny_checkpoint, tmp_path / "elsewhere" / "final", 128)
    config = json.loads((d / "config.json").read_text())
    assert config["randommask_window_bp"] == 128 and config["randommask_window_tokens"] == 125  # 123 6-mers + 2
    got = window.trained_window(str(d), str(d), KmerTokenizer(6))
    assert (got.bp, got.positions, got.limit, got.recorded) == (128, 125, 512, True)
    assert got.default_bp(KmerTokenizer(6)) == 128


def test_an_unannotated_checkpoint_keeps_all_its_positions_or_its_runs_window(tiny_checkpoint, tmp_path):
    tok = KmerTokenizer(6)
    bare = window.trained_window(str(tiny_checkpoint), str(tiny_checkpoint), tok)
    assert (bare.bp, bare.positions, bare.recorded, bare.default_bp(tok)) == (None, 512, False, 515)
    bare.require(10_000, "anything", allow=False)  # nothing is refused: it proceeds as it always did
    run = tmp_path / "old-run"
    shutil.copytree(tiny_checkpoint, run / "final")
    (run / "config.yaml").write_text("data:\n  window_bp: 200\n")  # an older run: only its config.yaml says
    old = window.trained_window(str(run / "final"), str(run / "final"), tok)
    assert (old.bp, old.positions, old.recorded, old.default_bp(tok)) == (200, 197, False, 200)


def test_beyond_the_window_is_one_line_unless_allowed(tiny_checkpoint, tmp_path):
    d = annotated(tiny_checkpoint, tmp_path / "final", 64)
    got = window.trained_window(str(d), "CKPT", KmerTokenizer(6))
    got.require(61, "fits", allow=False)
    with pytest.raises(UserError) as e:
        got.require(62, "--window-bp 65", allow=False)
    assert str(e.value) == ("--window-bp 65 needs 62 positions; CKPT was pretrained on 61 (windows of 64 bp), "
                            "positions past that never trained: give a shorter window or pass "
                            "--allow-untrained-positions to use them anyway")
    said = []
    got.require(62, "--window-bp 65", allow=True, log=said.append)
    assert len(said) == 1 and said[0].startswith("warning  --window-bp 65 needs 62 positions")


def test_a_continued_model_keeps_the_wider_window_of_its_parent():
    from transformers import BertConfig

    config, tok = BertConfig(), KmerTokenizer(6)
    window.record(config, tok, 515)
    window.record(config, tok, 128)  # continued on shorter windows: positions up to 512 were trained
    assert (config.randommask_window_bp, config.randommask_window_tokens) == (515, 512)
    narrow = BertConfig()
    window.record(narrow, tok, 128)
    window.record(narrow, tok, 256)
    assert (narrow.randommask_window_bp, narrow.randommask_window_tokens) == (256, 253)


def test_finetune_refuses_a_dataset_longer_than_the_window_before_any_ray_work(gue_dir, tiny_checkpoint, tmp_path,
                                                                                capsys, monkeypatch):
    from randommask.common import ray_runtime
    from randommask.finetune import driver

    ckpt = annotated(tiny_checkpoint, tmp_path / "final", 64)
    monkeypatch.setattr(driver, "_run_tune", lambda *a: pytest.fail("a trial started"))
    # not "Ray is not initialized": in the full suite the integration tier's shared cluster is up
    monkeypatch.setattr(ray_runtime, "ensure_ray", lambda *a, **k: pytest.fail("Ray was started"))
    code, out, err = run_main(capsys, "finetune", "--checkpoint", ckpt, "--gue-dir", gue_dir, "--tasks",
                              "prom/prom_core_tata", "--seeds", "1", "--out", tmp_path / "out")
    # prom_core_tata's rows are 70 bp: 65 6-mers + [CLS] + [SEP] = 67 positions; 64-bp windows trained 61
    assert code == 2 and out == "" and err.count("\n") == 1, (out, err)
    assert "GUE prom/prom_core_tata (sequences up to 70 bp) needs 67 positions" in err
    assert "pretrained on 61 (windows of 64 bp)" in err and "--allow-untrained-positions" in err
    assert not (tmp_path / "out").exists()


def test_finetune_goes_on_with_the_flag_and_its_saved_model_carries_the_window(gue_dir, tiny_checkpoint, tmp_path,
                                                                               monkeypatch):
    from huggingface_hub import ModelCard

    from randommask.finetune import driver, finetune
    from randommask.finetune.trial import run_trial

    ckpt = annotated(tiny_checkpoint, tmp_path / "final", 64)
    ran = []

    def in_process(todo, common, cpus, gpus, log):  # the trials themselves, without Ray Tune
        ran.extend(todo)
        for key in todo:
            run_trial({**common, "dataset": key.dataset, "seed": key.seed, "lr": key.lr})
        return {}

    monkeypatch.setattr(driver, "_run_tune", in_process)
    said = []
    r = finetune(str(ckpt), str(gue_dir), "prom/prom_core_tata", str(tmp_path / "out"), seeds=1, max_train=64,
                 max_eval=32, epochs=1, save_models=True, allow_untrained_positions=True, log=said.append)
    assert ran == [driver.TrialKey("prom/prom_core_tata", None, 0)] and r["failed_trials"] == 0
    assert any(s.startswith("warning  GUE prom/prom_core_tata (sequences up to 70 bp) needs 67 positions") for s in said)
    trial = json.loads(next((tmp_path / "out" / "trials").glob("*.json")).read_text())
    assert trial["ran"]["max_tokens"] == 67  # what the check counted is what the trial fed
    saved = Path(trial["model"])
    config = json.loads((saved / "config.json").read_text())
    assert config["randommask_window_bp"] == 64 and config["randommask_window_tokens"] == 61
    tok = KmerTokenizer(6)
    assert window.trained_window(str(saved), str(saved), tok).positions == 61  # a fine-tuned model is checked too
    assert ModelCard.load(saved / "README.md").data.to_dict()["randommask"]["base"]["init_from"] == str(ckpt)


def test_an_unannotated_checkpoint_fine_tunes_on_any_length_as_before(gue_dir, tiny_checkpoint, tmp_path, monkeypatch):
    from randommask.finetune import driver, finetune

    ran = []
    monkeypatch.setattr(driver, "_run_tune", lambda todo, *a: ran.extend(todo) or {n_s: "stopped here" for n_s in todo})
    finetune(str(tiny_checkpoint), str(gue_dir), "prom/prom_core_tata", str(tmp_path / "out"), seeds=1,
             log=lambda *_: None)
    assert ran == [driver.TrialKey("prom/prom_core_tata", None, 0)]  # no refusal: it reached the trials


def test_probe_refuses_whole_sequences_past_the_window_and_defaults_to_it(gue_dir, tiny_checkpoint, tmp_path, capsys):
    gue = tmp_path / "gue"  # the first rows of the real tf/0, so the probes take seconds
    for split, rows in (("train", 60), ("dev", 10), ("test", 30)):
        src = (Path(gue_dir) / "tf" / "0" / f"{split}.csv").read_text().splitlines()
        (gue / "tf" / "0").mkdir(parents=True, exist_ok=True)
        (gue / "tf" / "0" / f"{split}.csv").write_text("\n".join(src[: rows + 1]) + "\n")
    ckpt = annotated(tiny_checkpoint, tmp_path / "elsewhere" / "final", 64)
    out = tmp_path / "p.json"
    # tf/0's rows are 101 bp: whole, 96 6-mers + 2 = 98 positions; 64-bp windows trained 61
    code, stdout, err = run_main(capsys, "probe", ckpt, "--gue-dir", gue, "--tasks", "tf/0", "--window-bp", "0",
                                 "--out", out)
    assert code == 2 and err.count("\n") == 1 and not out.exists(), err
    assert "GUE tf/0 (sequences up to 101 bp, whole) needs 98 positions; " in err and "pretrained on 61" in err
    code, stdout, err = run_main(capsys, "probe", ckpt, "--gue-dir", gue, "--tasks", "tf/0", "--window-bp", "65",
                                 "--out", out)
    assert code == 2 and "(sequences up to 101 bp, windows of 65 bp) needs 62 positions" in err, err
    code, stdout, err = run_main(capsys, "probe", ckpt, "--gue-dir", gue, "--tasks", "tf/0", "--out", out)
    assert code == 0, err
    assert json.loads(out.read_text())["window_bp"] == 64  # the trained window, from config.json alone
    code, stdout, err = run_main(capsys, "probe", ckpt, "--gue-dir", gue, "--tasks", "tf/0", "--window-bp", "0",
                                 "--allow-untrained-positions", "--out", out)
    assert code == 0 and json.loads(out.read_text())["window_bp"] is None, err
    assert "warning  GUE tf/0 (sequences up to 101 bp, whole) needs 98 positions" in stdout
