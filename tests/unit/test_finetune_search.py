"""Choosing the fine-tuning learning rate on dev (``finetune --lr 1e-4,3e-4,1e-3``): the selection
from per-rate, per-seed dev scores, the test score reported for the selected rate only, the parsing
of ``--lr``; and a trial shorter than one evaluation interval, selected at its last step. The search
through Ray Tune, and its resume, are in tests/integration/test_finetune.py."""

import json
import math

import pytest
import torch

from conftest import run_main
from randommask import KmerTokenizer
from randommask.errors import UserError
from randommask.evaluation import gue
from randommask.finetune import aggregate, protocol, run_trial
from randommask.finetune.progress import finished_line
from randommask.finetune.results import markdown
from randommask.finetune.search import choose, parse_rates, search_seeds, trial_rates
from randommask.finetune.trial import evaluate, trial_file

RATES = (1e-4, 3e-4, 1e-3)
# (rate, seed): (dev loss, dev mcc, test mcc) at each trial's selected step. By hand, mean over seeds:
#   dev loss 1e-4: (0.60+0.70)/2 = 0.65   3e-4: (0.50+0.90)/2 = 0.70   1e-3: (0.64+0.68)/2 = 0.66 -> published: 1e-4
#   dev mcc  1e-4: (0.30+0.20)/2 = 0.25   3e-4: (0.40+0.16)/2 = 0.28   1e-3: (0.10+0.50)/2 = 0.30 -> fast: 1e-3
# A per-seed pick would differ (seed 0's lowest loss is 3e-4's), and so would picking by test.
SCORES = {(1e-4, 0): (0.60, 0.30, 0.11), (1e-4, 1): (0.70, 0.20, 0.13),
          (3e-4, 0): (0.50, 0.40, 0.917), (3e-4, 1): (0.90, 0.16, 0.813),
          (1e-3, 0): (0.64, 0.10, 0.217), (1e-3, 1): (0.68, 0.50, 0.253)}


def _trial(lr, seed, loss, mcc, test_mcc, dataset="tf/2"):
    hp = {**gue.REGISTRY[dataset].published(), "lr": lr}
    return {"dataset": dataset, "seed": seed, "status": "ok", "hyperparameters": hp, "ran": {"steps": 10},
            "dev_best": {"loss": loss, "mcc": mcc, "f1_macro": 0.5, "accuracy": 0.5},
            "test": {"mcc": test_mcc, "f1_macro": test_mcc + 0.1, "accuracy": test_mcc + 0.2}}


def _trials():
    return [_trial(lr, seed, *SCORES[(lr, seed)]) for (lr, seed) in SCORES]


def test_the_rate_with_the_best_mean_dev_score_under_the_protocols_criterion_is_selected():
    published = choose(_trials(), RATES, protocol.SELECTION["published"], "mcc")
    assert published.selected == 1e-4 and published.criterion == "dev_loss" and published.lower_is_better
    assert [r.dev_mean for r in published.rates] == pytest.approx([0.65, 0.70, 0.66])
    assert [r.dev_per_seed for r in published.rates] == [{0: 0.60, 1: 0.70}, {0: 0.50, 1: 0.90}, {0: 0.64, 1: 0.68}]
    fast = choose(_trials(), RATES, protocol.SELECTION["fast"], "mcc")
    assert fast.selected == 1e-3 and fast.criterion == "dev_mcc" and not fast.lower_is_better
    assert [r.dev_mean for r in fast.rates] == pytest.approx([0.25, 0.28, 0.30])


def test_ties_go_to_the_smaller_rate_whatever_the_order_given():
    trials = [_trial(3e-4, 0, 0.5, 0.2, 0.9), _trial(1e-4, 0, 0.5, 0.2, 0.1), _trial(1e-3, 0, 0.6, 0.2, 0.1)]
    for order in ((3e-4, 1e-4, 1e-3), (1e-3, 1e-4, 3e-4)):
        assert choose(trials, order, protocol.SELECTION["published"], "mcc").selected == 1e-4
        assert choose(trials, order, protocol.SELECTION["fast"], "mcc").selected == 1e-4  # all three at MCC 0.2


def test_a_rate_with_a_failed_seed_or_a_diverged_loss_does_not_win():
    trials = [_trial(1e-4, 0, 0.6, 0.3, 0.1), _trial(1e-4, 1, 0.6, 0.3, 0.1),
              _trial(1e-3, 0, 0.1, 0.9, 0.9),  # its other seed failed: a mean over one seed does not compare
              {"dataset": "tf/2", "seed": 1, "status": "failed", "lr": 1e-3, "error": "lr 0.001: boom"},
              _trial(1e-2, 0, math.nan, 0.0, 0.0), _trial(1e-2, 1, 0.2, 0.0, 0.0)]
    c = choose(trials, (1e-2, 1e-4, 1e-3), protocol.SELECTION["published"], "mcc")  # NaN first: min() keeps a NaN
    assert c.selected == 1e-4
    assert (c.rates[2].dev_mean, c.rates[2].seeds_failed, c.rates[2].dev_per_seed) == (None, 1, {0: 0.1})
    assert math.isnan(c.rates[0].dev_mean)
    only_failed = choose(trials[2:4], (1e-3,), protocol.SELECTION["published"], "mcc")
    assert only_failed.selected is None


def test_results_report_the_test_score_of_the_selected_rate_only():
    run = {"protocol": "custom", "selection": protocol.SELECTION["published"], "precision": "fp32",
           "not_comparable": "overrides", "lr_search": list(RATES)}
    results = aggregate(_trials(), None, "ckpt", run)
    row = results["datasets"][0]
    # 1e-4 is selected (mean dev loss 0.65): its test MCCs 0.11 and 0.13, by hand mean 0.12, std 0.014142
    assert row["per_seed"] == {0: 0.11, 1: 0.13} and row["seeds_ok"] == 2 and row["hyperparameters"]["lr"] == 1e-4
    assert row["score_mean"] == pytest.approx(0.12) and row["score_std"] == pytest.approx(0.0141421356)
    assert results["overall"] == pytest.approx(0.12)
    assert row["lr_search"]["selected"] == 1e-4 and row["lr_search"]["criterion"] == "dev_loss"
    assert row["lr_search"]["lower_is_better"] is True
    assert [(r["lr"], r["dev_mean"]) for r in row["lr_search"]["rates"]] == [
        (1e-4, pytest.approx(0.65)), (3e-4, pytest.approx(0.70)), (1e-3, pytest.approx(0.66))]
    text = json.dumps(results)
    assert all(str(v) not in text for v in (0.917, 0.813, 0.217, 0.253)), "a rate not selected showed its test score"
    md = markdown(results)
    assert "| tf/2 | mcc | 0.1200 ± 0.0141 | 2 | 10 | 3 | 0.0001 | 32 |" in md
    assert "| tf/2 | 0.0001 | dev_loss | 0.6500 | 0.6000, 0.7000 | **selected** |" in md
    assert "| tf/2 | 0.0003 | dev_loss | 0.7000 | 0.5000, 0.9000 |  |" in md and md.count("**selected**") == 1
    assert "chosen per dataset on dev from 0.0001, 0.0003, 0.001: the lowest mean" in md
    # the fast protocol's criterion picks 1e-3 from the same trials, and reports its test
    fast = aggregate(_trials(), None, "ckpt", {**run, "selection": protocol.SELECTION["fast"]})["datasets"][0]
    assert fast["lr_search"]["selected"] == 1e-3 and fast["per_seed"] == {0: 0.217, 1: 0.253}
    assert fast["lr_search"]["criterion"] == "dev_mcc" and fast["lr_search"]["lower_is_better"] is False
    # no search: no lr_search key anywhere, every ok trial of the dataset counts (as before)
    plain = aggregate(_trials()[:2], None, "ckpt", {k: v for k, v in run.items() if k != "lr_search"})
    assert "lr_search" not in plain and "lr_search" not in plain["datasets"][0]
    assert "Learning rate on dev" not in markdown(plain)


def test_search_seeds_choose_on_the_first_seeds_and_report_every_seed_at_that_rate():
    """``--search-seeds 1``: seed 0 alone chooses; by hand its lowest dev loss is 3e-4's (0.50), though
    the mean over both seeds would choose 1e-4 (above). Seed 1 ran at 3e-4 only; the test row is 3e-4's
    two seeds: (0.917 + 0.813) / 2 = 0.865, sample sd 0.07354."""
    trials = [t for t in _trials() if t["seed"] == 0 or t["hyperparameters"]["lr"] == 3e-4]
    run = {"protocol": "custom", "selection": protocol.SELECTION["published"], "precision": "fp32",
           "not_comparable": "overrides", "lr_search": list(RATES), "search_seeds": 1}
    results = aggregate(trials, None, "ckpt", run)
    row = results["datasets"][0]
    assert row["lr_search"]["selected"] == 3e-4
    assert [(r["lr"], r["dev_per_seed"]) for r in row["lr_search"]["rates"]] == [
        (1e-4, {0: 0.60}), (3e-4, {0: 0.50}), (1e-3, {0: 0.64})]
    assert row["per_seed"] == {0: 0.917, 1: 0.813} and row["seeds_ok"] == 2
    assert row["score_mean"] == pytest.approx(0.865) and row["score_std"] == pytest.approx(0.0735391)
    assert "Rates were compared on the first 1 seed(s); the other seeds ran at the chosen rate only." in \
        markdown(results)
    # every seed competing (no search_seeds) needs every rate's seed 1: 1e-4 and 1e-3 have none, so 3e-4 wins
    # by default here; with all six trials the mean over seeds chooses 1e-4 (the test above)
    assert aggregate(_trials(), None, "ckpt", {**run, "search_seeds": 1})["datasets"][0]["lr_search"]["selected"] \
        == 3e-4


@pytest.mark.parametrize("args, message", [
    (["--search-seeds", "1"], "--search-seeds needs an --lr search"),
    (["--lr", "1e-4,3e-4", "--seeds", "2", "--search-seeds", "3"], "--search-seeds must be between 1 and --seeds (2)"),
    (["--lr", "1e-4,3e-4", "--search-seeds", "0"], "--search-seeds must be between 1 and --seeds (3), got 0"),
])
def test_bad_search_seeds_is_one_line_exit_2_before_any_work(capsys, tmp_path, args, message):
    code, out, err = run_main(capsys, "finetune", "--checkpoint", tmp_path / "missing", "--gue-dir", tmp_path,
                              "--out", tmp_path / "out", *args)
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("text, rates", [("1e-4,3e-4,1e-3", (1e-4, 3e-4, 1e-3)), ("3e-4", (3e-4,)),
                                         (" 1e-4 , 2e-5", (1e-4, 2e-5))])
def test_lr_parses_one_rate_or_a_list(text, rates):
    assert parse_rates(text) == rates


@pytest.mark.parametrize("lr, rates", [(None, (None,)), (3e-4, (3e-4,)), (2, (2.0,)), ([1e-4, 3e-4], (1e-4, 3e-4))])
def test_trial_rates_take_one_number_or_a_list(lr, rates):
    got = trial_rates(lr)
    assert got == rates and all(r is None or type(r) is float for r in got)


def test_search_seeds_accept_1_to_seeds_and_default_to_every_seed():
    assert [search_seeds(n, 3, True) for n in (1, 2, 3)] == [1, 2, 3]
    assert search_seeds(None, 3, True) == search_seeds(None, 3, False) == 3
    for n in (0, 4):
        with pytest.raises(UserError, match=rf"between 1 and --seeds \(3\), got {n}"):
            search_seeds(n, 3, True)
    with pytest.raises(UserError, match="needs an --lr search"):
        search_seeds(1, 3, False)


@pytest.mark.parametrize("text, message", [
    ("1e-4,fast", "'fast' is not a number"), ("", "'' is not a number"), ("1e-4,,3e-4", "'' is not a number"),
    ("0", "must be > 0, got 0"), ("1e-4,-3e-4", "must be > 0, got -0.0003"), ("nan", "must be > 0, got nan"),
    ("1e-4,0.0001", "0.0001 given twice"),
])
def test_bad_lr_is_one_line_exit_2(capsys, tmp_path, text, message):
    with pytest.raises(UserError, match=message):
        parse_rates(text)
    code, out, err = run_main(capsys, "finetune", "--checkpoint", tmp_path, "--gue-dir", tmp_path, "--out",
                              tmp_path / "out", f"--lr={text}")
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()


def test_trial_files_name_the_rate_only_in_a_search():
    out = "s3://b/ft"
    assert trial_file(out, "prom/prom_core_tata", 0) == "s3://b/ft/trials/prom_prom_core_tata__seed0.json"  # as before
    assert trial_file(out, "tf/2", 1, 3e-4) == "s3://b/ft/trials/tf_2__lr0.0003__seed1.json"
    assert trial_file(out, "tf/2", 1, 1e-4) != trial_file(out, "tf/2", 1, 1.000001e-4)


def test_finished_trial_line():
    p = {"dataset": "tf/2", "seed": 1, "lr": 3e-4, "protocol": "published"}
    result = {"lr": 3e-4, "dev_best_loss": 0.61234, "dev_best_mcc": 0.2, "test_mcc": 0.31234, "time_total_s": 12.4}
    assert finished_line(p, result, 3) == "trial tf/2 seed 1 lr 0.0003: dev loss 0.6123, test mcc 0.3123, 12 s; " \
                                          "3 trial(s) left"
    assert "dev mcc 0.2000" in finished_line({**p, "protocol": "fast"}, result, 0)


def test_a_trial_shorter_than_one_evaluation_interval_is_selected_at_its_last_step(gue_dir, tiny_checkpoint, tmp_path):
    """Full-size mouse/2 (2,620 rows) for one epoch: 82 steps, under eval_steps 200, and not subsampled,
    so the schedule evaluates nowhere; the trial evaluates dev at its last step and scores that model."""
    from transformers import BertForSequenceClassification

    plan = protocol.plan(gue.REGISTRY["mouse/2"], "published", epochs=1)
    assert protocol.schedule(plan, 2620).eval_at == ()  # the case itself: no evaluation on the schedule
    states = {}
    result = run_trial({"dataset": "mouse/2", "seed": 0, "checkpoint": str(tiny_checkpoint), "gue_dir": str(gue_dir),
                        "out": str(tmp_path), "max_eval": 64, "epochs": 1},
                       on_evaluate=lambda step, model, dev: states.__setitem__(
                           step, {k: v.detach().clone() for k, v in model.state_dict().items()}))
    assert result["status"] == "ok" and result["ran"]["steps"] == 82 and result["ran"]["n_train"] == 2620
    assert result["ran"]["evaluations"] == 1 and result["ran"]["best_step"] == 82 and sorted(states) == [82]
    assert [h["step"] for h in result["history"]] == [82]
    assert result["dev_best"]["loss"] == result["history"][0]["dev_loss"]
    # the test scores are those of the model at step 82, scored here on its own
    enc = KmerTokenizer.from_pretrained(tiny_checkpoint)
    seqs, labels = gue.subsample(*gue.read_split(str(gue_dir), "mouse/2", "test"), 64, seed=0)
    e = enc.encode_batch(seqs, max_length=result["ran"]["max_tokens"])
    model = BertForSequenceClassification.from_pretrained(tiny_checkpoint, num_labels=2, attn_implementation="sdpa")
    model.load_state_dict(states[82])
    test = evaluate(model, torch.from_numpy(e["input_ids"]), torch.from_numpy(e["attention_mask"]),
                    torch.from_numpy(labels), torch.device("cpu"))
    assert {k: round(v, 5) for k, v in test.items()} == result["test"]
    assert (tmp_path / "trials" / "mouse_2__seed0.json").exists()
