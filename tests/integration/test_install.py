"""The package installed the way the Docker image and users install it (``pip install .``, not editable),
run from a directory outside the checkout: the CLI, a benchmark on the packaged default genome, and a
pretraining from a config file."""

import os
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

pytestmark = pytest.mark.ray
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """A fresh venv holding a non-editable install of the checkout; its dependencies are the test
    environment's, seen through a .pth line (the editable install there is not: its own .pth is not read)."""
    venv = tmp_path_factory.mktemp("installed") / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    site = venv / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}" / "site-packages"
    (site / "test-deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    r = subprocess.run([sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"), "install", "--quiet",
                        "--no-deps", "--no-build-isolation", "--no-index", str(REPO)],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    return venv


def run(venv: Path, cwd: Path, *args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "RAY_ADDRESS")}
    env["PATH"] = f"{venv / 'bin'}:{env['PATH']}"
    return subprocess.run([str(venv / "bin" / "randommask"), *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout)


def test_non_editable_install_runs_outside_the_checkout(installed, prepared, tmp_path):
    where = subprocess.run([str(installed / "bin" / "python"), "-c", "import randommask; print(randommask.__file__)"],
                           cwd=tmp_path, capture_output=True, text=True, env={"PATH": os.environ["PATH"]})
    assert str(installed) in where.stdout and str(REPO) not in where.stdout, where.stdout + where.stderr
    assert "pretrain" in run(installed, tmp_path, "--help").stdout

    # The benchmarks' default genome ships as package data.
    bench = run(installed, tmp_path, "bench", "mask", "--batch", "4", "--seq-len", "64")
    assert bench.returncode == 0 and '"bench": "mask"' in bench.stdout, bench.stderr[-2000:]

    config = tmp_path / "tiny.yaml"
    config.write_text((REPO / "jobs" / "configs" / "pretrain-tiny.yaml").read_text())
    r = run(installed, tmp_path, "pretrain", "--config", str(config), "--set", f"data.prepared={prepared}",
            "--set", "optim.max_steps=10", "--set", "run.eval_every=10", "--set", "run.checkpoint_every=10",
            "--set", "run.name=installed", "--set", "run.storage_path=runs", "--set", "observability.progress=false",
            "--set", "observability.ray_metrics=false")
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    assert "done     10/10 steps" in r.stdout
    assert (tmp_path / "runs" / "installed" / "final" / "config.json").is_file()
