"""The GPU check's CPU path, as the GPU machine will run it: no Ray, no pydantic, only this package."""

import json
import os
import subprocess
import sys

from conftest import REPO
from randommask.common.hardware import peak_bf16_flops

# Importing either of these fails in the check's process, as on a machine that lacks them.
RUN = ("import sys; sys.modules['ray'] = None; sys.modules['pydantic'] = None; "
       "from randommask.tools.gpu_check import main; sys.exit(main(sys.argv[1:]))")


def test_every_check_runs_on_the_cpu_without_ray_or_pydantic():
    env = {**os.environ, "PYTHONPATH": str(REPO / "platform")}
    out = subprocess.run([sys.executable, "-c", RUN, "--quick"], capture_output=True, text=True, env=env,
                         timeout=600, cwd="/")
    assert out.returncode == 0, out.stderr[-3000:]
    records = [json.loads(line) for line in out.stdout.splitlines()]
    by_check = {r["check"]: r for r in records}
    assert list(by_check) == ["env", "mlm-step", "train-step", "finetune-step", "done"]
    assert not any("error" in r for r in records) and by_check["done"]["ok"]
    assert by_check["mlm-step"]["loss_abs_diff"] < 1e-4  # the sparse loss is the full-vocabulary loss
    train = by_check["train-step"]
    assert train["loss_falls"] and train["tokens_per_s"] > 0 and train["steps"] == 40
    assert by_check["finetune-step"]["tokens_per_s"] > 0


def test_a_failing_check_makes_the_exit_status_non_zero():
    env = {**os.environ, "PYTHONPATH": str(REPO / "platform")}
    out = subprocess.run([sys.executable, "-c", RUN, "--device", "cuda"], capture_output=True, text=True,
                         env=env, timeout=120)
    assert out.returncode == 2 and "torch sees no CUDA device" in out.stderr


def test_cards_are_told_apart():
    assert peak_bf16_flops("NVIDIA H100 80GB HBM3") == ("H100", 989e12)  # SXM
    assert peak_bf16_flops("NVIDIA H100 PCIe") == ("H100 PCIe", 756e12)
    assert peak_bf16_flops("NVIDIA H100 NVL") == ("H100 NVL", 835e12)
    assert peak_bf16_flops("NVIDIA H200") == ("H200", 989e12)
    assert peak_bf16_flops("NVIDIA A100-SXM4-80GB") == ("A100", 312e12)
    assert peak_bf16_flops("NVIDIA A10G")[0] == "A10G"
    assert peak_bf16_flops("Tesla T4") is None
