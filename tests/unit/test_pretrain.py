"""Pretraining configs that cannot run: one line on stderr, exit status 2, nothing started or written
(the pretraining runs are in tests/integration/test_pretrain.py)."""

import pytest

from conftest import TINY_CONFIG, load_tiny, run_cli, run_main


@pytest.mark.parametrize("overrides, message", [
    (["optim.lr=-1"], "optim.lr: Input should be greater than 0"),
    (["optim.max_stepz=10"], "optim.max_stepz: unknown key"),
    (["masking.phase_ends=[30,10]"], "strictly increasing"),
    (["masking.strategy=whole"], "masking.strategy"),
    (["model.preset=huge"], "unknown preset"),
    (["data.window_bp=2000"], "more than the model's 512 positions"),
    (["data.storage_options={secret: x}"], "credentials never go in a config"),
    (["optim.lr"], "expected key=value"),
    (["scaling.resources_per_worker={GPU: 1}"], "GPU is set by scaling.gpus_per_worker"),
    (["scaling.resources_per_worker={'spot node': 1}"], "resource name 'spot node'"),
    (["scaling.resources_per_worker={trainer: -1}"], "resource trainer: amount -1.0 must be a finite number >= 0"),
    (["scaling.resources_per_worker={trainer: .inf}"], "must be a finite number"),
    (["scaling.resources_per_worker=[trainer]"], "scaling.resources_per_worker: Input should be a valid dictionary"),
])
def test_bad_config_is_one_line_and_starts_nothing(tmp_path, capsys, overrides, message):
    args = ["pretrain", "--config", TINY_CONFIG, "--set", f"run.storage_path={tmp_path / 'runs'}"]
    for o in overrides:
        args += ["--set", o]
    code, _, err = run_main(capsys, *args)
    assert code == 2
    assert err.count("\n") == 1 and message in err and "Traceback" not in err, err
    assert not (tmp_path / "runs").exists()


def test_missing_config_and_bad_yaml(tmp_path, capsys):
    code, _, err = run_main(capsys, "pretrain", "--config", tmp_path / "none.yaml")
    assert code == 2 and "not found" in err
    bad = tmp_path / "bad.yaml"
    bad.write_text("data: [unclosed\n")
    out = run_cli("pretrain", "--config", bad)  # a real process: no warning or traceback beside the line
    assert out.returncode == 2 and "not valid YAML" in out.stderr and out.stderr.count("\n") == 1, out.stderr


def test_resume_conflicts_name_training_settings_only():
    from randommask.training.config import resume_conflicts

    base = {"data": {"k": 6, "prepared": "/a", "storage_options": {"key": "x"}}, "masking": {"strategy": "span"},
            "optim": {"decay": "linear", "max_steps": 100, "lr": 1e-3}, "run": {"name": "a"}, "scaling": {"num_workers": 1}}
    moved = {**base, "data": {**base["data"], "prepared": "/b", "storage_options": {}}, "run": {"name": "b"},
             "scaling": {"num_workers": 4}}
    assert resume_conflicts(base, moved) == []  # where and how it runs may change
    longer = {**base, "optim": {**base["optim"], "max_steps": 200}}
    assert resume_conflicts(base, longer) == ["optim.max_steps: 100 -> 200"]  # a linear decay would change
    const = {**base, "optim": {**base["optim"], "decay": "constant"}}
    assert resume_conflicts(const, {**const, "optim": {**const["optim"], "max_steps": 200}}) == []
    other = {**base, "masking": {"strategy": "randommask"}, "data": {**base["data"], "k": 3}}
    assert resume_conflicts(base, other) == ["data.k: 6 -> 3", "masking.strategy: 'span' -> 'randommask'"]
    newer = {**base, "optim": {**base["optim"], "grad_clip": 1.0}}  # a setting the saved run's version lacked
    assert resume_conflicts(base, newer) == []


def test_the_floors_cache_key_follows_the_data_content_and_the_evaluation_settings(tmp_path):
    from randommask.training.driver import floors_key

    cfg = load_tiny(tmp_path, tmp_path, "r")
    manifest = {"run": "a", "created": "t0", "shards": [{"path": "shards/a/f0.bin", "sha256": "1" * 64}],
                "validation": [{"record": 0, "start": 10, "end": 20}]}
    key = floors_key(cfg, manifest)
    # the same content prepared again (another run id and path) or copied elsewhere: the same floors
    assert floors_key(cfg, {**manifest, "run": "b", "created": "t1",
                            "shards": [{"path": "shards/b/f0.bin", "sha256": "1" * 64}]}) == key
    assert floors_key(cfg, {**manifest, "shards": [{"path": "x", "sha256": "2" * 64}]}) != key
    assert floors_key(cfg, {**manifest, "validation": [{"record": 0, "start": 10, "end": 21}]}) != key
    for change in ("run.eval_windows=7", "data.window_bp=64", "data.k=3"):
        assert floors_key(load_tiny(tmp_path, tmp_path, "r", change), manifest) != key
