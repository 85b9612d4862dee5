"""The checkpointer's reading of ``trainer_state.pt``: tensors and plain values only. A checkpoint can
come from another team's bucket (``run.resume_from``, or a run directory someone else wrote), and a
full unpickle runs whatever code the file names: such a file is refused in one line and its payload
never runs, on every path that reads one (the driver's check of ``run.resume_from``, the worker's
restore)."""

import pytest
import torch

from conftest import load_tiny
from randommask.errors import UserError
from randommask.training.checkpointer import Checkpointer, TrainState, load_state


class Payload:
    """What a hostile trainer_state.pt carries: unpickling it calls ``open(marker, "w")``."""

    def __init__(self, marker) -> None:
        self.marker = marker

    def __reduce__(self):
        return open, (str(self.marker), "w")


def hostile_checkpoint(tmp_path):
    """(a step_* directory whose trainer_state.pt carries a payload, the file the payload would create)."""
    marker = tmp_path / "the-payload-ran"
    ckpt = tmp_path / "elsewhere" / "step_00000010"
    ckpt.mkdir(parents=True)
    torch.save({"config": {}, "step": 10, "extra": Payload(marker)}, ckpt / "trainer_state.pt")
    return ckpt, marker


def test_the_payload_would_run_under_a_full_unpickle(tmp_path):
    """The test's own premise: the file is hostile (what weights_only=False, the old reading, did)."""
    ckpt, marker = hostile_checkpoint(tmp_path)
    torch.load(ckpt / "trainer_state.pt", weights_only=False).get("extra").close()
    assert marker.exists()


def test_a_state_of_tensors_and_plain_values_loads_from_a_path_or_bytes(tmp_path):
    model = torch.nn.Linear(3, 2)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model(torch.ones(1, 3)).sum().backward()
    opt.step()
    state = {"optimizer": opt.state_dict(), "rng": [torch.get_rng_state()], "history": [{"step": 5, "loss": 8.2}],
             "config": {"run": {"name": "x"}}, "cuda_rng": [None], "step": 5}
    torch.save(state, tmp_path / "trainer_state.pt")
    for source in (str(tmp_path / "trainer_state.pt"), (tmp_path / "trainer_state.pt").read_bytes()):
        back = load_state(source, "here")
        assert back["history"] == state["history"] and back["config"] == state["config"] and back["step"] == 5
        assert torch.equal(back["optimizer"]["state"][0]["exp_avg"], state["optimizer"]["state"][0]["exp_avg"])


def test_resume_from_a_hostile_checkpoint_is_refused_in_one_line_and_nothing_runs(tmp_path):
    """The driver's check of ``run.resume_from``, which runs before anything is started or written
    (the CLI prints a UserError as its one line, exit 2: tests/unit/test_pretrain.py)."""
    from randommask.training.driver import check_resume

    ckpt, marker = hostile_checkpoint(tmp_path)
    cfg = load_tiny(str(tmp_path / "prepared"), tmp_path / "runs", "moved", f"run.resume_from={ckpt}")
    with pytest.raises(UserError) as refused:
        check_resume(cfg)
    assert str(refused.value) == (f"run.resume_from {ckpt}: trainer_state.pt holds objects other than tensors and "
                                  "plain values; refused (loading it would run code it names). Use a checkpoint "
                                  "written by randommask")
    assert not marker.exists() and not (tmp_path / "runs").exists()


@pytest.mark.parametrize("content, message", [
    (b"", "trainer_state.pt is unreadable (EOFError)"),
    (b"hello world", "trainer_state.pt is unreadable (KeyError)"),  # garbage, read as a legacy pickle
    (None, "trainer_state.pt holds no training config"),  # a torch file of plain values, but not a state
])
def test_resume_from_a_file_that_is_no_trainer_state_is_one_line(tmp_path, content, message):
    from randommask.training.driver import check_resume

    ckpt = tmp_path / "step_00000010"
    ckpt.mkdir()
    if content is None:
        torch.save({"step": 10}, ckpt / "trainer_state.pt")
    else:
        (ckpt / "trainer_state.pt").write_bytes(content)
    with pytest.raises(UserError) as refused:
        check_resume(load_tiny(str(tmp_path / "prepared"), tmp_path / "runs", "moved", f"run.resume_from={ckpt}"))
    assert str(refused.value).startswith(f"run.resume_from {ckpt}: {message}")
    assert "step_* checkpoint directory of a pretraining run" in str(refused.value)


def test_the_workers_restore_refuses_a_hostile_checkpoint_and_nothing_runs(tmp_path, monkeypatch):
    """The worker reads the checkpoint Ray Train hands it (its own run's latest, which another writer may
    have replaced): the same refusal, before any weights are loaded."""
    import ray.train

    from randommask.data.tokenizer import KmerTokenizer
    from randommask.training.model import build_mlm
    from randommask.training.step import build_optimizer

    ckpt, marker = hostile_checkpoint(tmp_path)
    cfg = load_tiny(str(tmp_path / "prepared"), tmp_path / "runs", "victim")
    mlm = build_mlm(cfg.model.preset, cfg.data.k, **cfg.model.overrides)
    opt, sched = build_optimizer(mlm, cfg.optim)
    keeper = Checkpointer(cfg, 0, 1, torch.device("cpu"), mlm, KmerTokenizer(cfg.data.k), opt, sched, cfg.run_dir())
    monkeypatch.setattr(ray.train, "get_checkpoint", lambda: ray.train.Checkpoint(str(ckpt)))
    with pytest.raises(UserError, match=r"^checkpoint .*step_00000010: trainer_state.pt holds objects other than"):
        keeper.restore(TrainState())
    assert not marker.exists()
