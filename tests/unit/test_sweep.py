"""Sweeps over mask schedules without Ray: sweep configs, trial configs, the search metric, and the
linear probe that judges finished trials (the sweeps through Ray Tune are in
tests/integration/test_sweep.py)."""

import numpy as np
import pytest

from conftest import REPO
from randommask.errors import UserError
from randommask.evaluation import gue
from randommask.evaluation.probe import embed, linear_probe
from randommask.sweep.driver import load_sweep, search_metric, trial_config
from unit.test_probe import plain_embed, sklearn_mcc

SWEEP = REPO / "jobs" / "configs" / "sweep-tiny.yaml"


def test_the_search_and_asha_share_one_metric():
    asha = "scheduler={asha: {metric: eval_span_2k_mask_loss, mode: min}}"
    assert search_metric(load_sweep(str(SWEEP), ["set=[data.prepared=x]", asha])[0]) == ("eval_span_2k_mask_loss", "min")
    probe = "objective={metric: probe_score, mode: max, probe: {gue_dir: g, datasets: [tf/0]}}"
    no_asha = load_sweep(str(SWEEP), ["set=[data.prepared=x]", "scheduler=null", probe])[0]
    assert search_metric(no_asha) == ("eval_span_k_mask_loss", "min")  # a probe is never reported during training
    plain = load_sweep(str(SWEEP), ["set=[data.prepared=x]", "scheduler=null", "objective.metric=eval_span_k_loss"])[0]
    assert search_metric(plain) == ("eval_span_k_loss", "min")


def test_trial_config_drops_parameters_the_strategy_does_not_take(tmp_path):
    sweep_cfg, base = load_sweep(str(SWEEP), ["set=[data.prepared=x]"])
    span = trial_config(base, {"masking.strategy": "span", "masking.phase_length": 10}, sweep_cfg, "t1", str(tmp_path))
    assert span.masking.strategy == "span" and span.masking.phase_ends is None
    rm = trial_config(base, {"masking.strategy": "randommask", "masking.phase_length": 10,
                             "masking.span_step": 3}, sweep_cfg, "t2", str(tmp_path))
    assert rm.masking.phase_ends == [10, 20, 30, 40, 50] and rm.masking.span_step == 3
    assert rm.run.name == "sweep-tiny-t2"


@pytest.mark.parametrize("overrides, message", [
    (["search.algorithm=optuna"], "grid dimensions need search.algorithm grid or random"),
    (["search.space={optim.lr: {normal: [0, 1]}}"], "one of grid, choice"),
    (["objective.metric=probe_score"], "needs a probe section"),
    (["scheduler={asha: {grace_period: 0}}"], "grace_period"),
    (["pretrain=nope.yaml"], "pretrain config"),
    (["search.num_sample=3"], "search.num_sample: unknown key"),
])
def test_bad_sweep_configs(overrides, message):
    with pytest.raises(UserError, match=message):
        load_sweep(str(SWEEP), overrides)


def test_linear_probe_on_frozen_embeddings(tiny_checkpoint, gue_dir):
    scores = linear_probe(str(tiny_checkpoint), str(gue_dir), ["prom/prom_core_tata"], max_train=300, max_eval=200)
    assert set(scores) == {"probe_prom/prom_core_tata", "probe_score"}
    # the same rows and embeddings (those checked against a plain transformers forward), fitted by sklearn here
    (trs, try_), (tes, tey) = (gue.subsample(*gue.read_split(str(gue_dir), "prom/prom_core_tata", split), n, seed=0)
                               for split, n in (("train", 300), ("test", 200)))
    train_x, test_x = embed(str(tiny_checkpoint), trs), embed(str(tiny_checkpoint), tes)
    np.testing.assert_allclose(test_x, plain_embed(tiny_checkpoint, tes), rtol=0, atol=1e-5)
    held_out = sklearn_mcc(train_x, try_, test_x, tey)
    assert scores["probe_prom/prom_core_tata"] == pytest.approx(held_out, abs=1e-5) == scores["probe_score"]
    assert abs(sklearn_mcc(train_x, try_, train_x, try_) - held_out) > 0.05  # not its training rows' score
