"""The command line without Ray: the kernel benchmarks' JSON lines, one-line errors (the demo and the
pipeline benchmark, which start Ray, are in tests/integration/test_cli.py)."""

import json

from conftest import run_cli, run_main


def test_bench_tokenize_mask_and_mlm_step_print_json(ecoli, capsys):
    code, out, err = run_main(capsys, "bench", "tokenize", "--windows", "200", "--genome", ecoli)
    assert code == 0, err
    r = json.loads(out.strip().splitlines()[-1])
    assert r["bench"] == "tokenize" and r["ratio"] > 0 and r["ours_tokens_per_s"] > 0

    code, out, err = run_main(capsys, "bench", "mask", "--batch", "8", "--genome", ecoli)
    assert code == 0, err
    r = json.loads(out.strip().splitlines()[-1])
    assert r["bench"] == "mask" and r["span_bounds"] == [6, 14] and r["ratio"] > 0

    code, out, err = run_main(capsys, "bench", "mlm-step", "--batch", "2", "--seq-len", "128", "--steps", "1",
                              "--genome", ecoli)
    assert code == 0, err
    r = json.loads(out.strip().splitlines()[-1])
    assert r["bench"] == "mlm-step" and r["loss_abs_diff"] < 1e-4 and r["ratio"] > 0  # a measurement, not a timed test


def test_missing_genome_is_one_clear_line(tmp_path, capsys):
    out = run_cli("demo", "--genome", tmp_path / "nope.fa")  # a real process: nothing else on stderr
    assert out.returncode == 2
    assert out.stderr.strip().count("\n") == 0 and "nope.fa" in out.stderr and "Traceback" not in out.stderr
    bad = tmp_path / "bad.fa"
    bad.write_text("hello\n")
    code, _, err = run_main(capsys, "bench", "tokenize", "--genome", bad)
    assert code == 2 and "no '>' header" in err
