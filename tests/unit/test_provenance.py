"""The record of what produced an inference output, and what a rerun into the same --out may do
(the commands end to end are in tests/integration/test_inference.py)."""

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from randommask.common.checkpoints import weights_digest
from randommask.errors import UserError
from randommask.inference import provenance as pv

QUIET = lambda *_: None  # noqa: E731


def record(**settings):
    return {"command": "embed", "checkpoint": "/m", "weights_sha256": "a" * 64,
            "settings": {"layer": -1, "pool": "mean", **settings}, "randommask": "0.1.0"}


def test_differences_name_what_changes_the_values_not_the_path_or_version():
    a = record()
    assert pv.differences(a, {**a, "checkpoint": "/elsewhere", "randommask": "9"}) == []
    b = {**record(layer=2), "weights_sha256": "b" * 64, "checkpoint": "/n"}
    assert pv.differences(a, b) == ["checkpoint /m (weights aaaaaaaaaaaa) there, /n (weights bbbbbbbbbbbb) now",
                                    "layer -1 there, 2 now"]
    assert pv.differences({**a, "command": "score-variants"}, a)[0].startswith("written by `randommask score-variants`")


def test_claim_resumes_refuses_or_overwrites_and_keeps_what_is_not_ours(tmp_path):
    out = tmp_path / "out"
    pv.claim(str(out), record(), log=QUIET)  # a new folder: the record first
    assert json.loads((out / pv.MANIFEST).read_text()) == record()
    pq.write_table(pv.with_metadata(pa.table({"x": [1]}), record()), out / "part-0.parquet")
    (out / "notes.txt").write_text("mine")
    pv.claim(str(out), record(), log=QUIET)  # the same: resume, nothing changes
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    with pytest.raises(UserError, match=r"--out .* holds results of other settings \(pool 'mean' there, 'cls' now\)"):
        pv.claim(str(out), record(pool="cls"), log=QUIET)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    said = []
    pv.claim(str(out), record(pool="cls"), overwrite=True, log=said.append)
    assert sorted(p.name for p in out.iterdir()) == [pv.MANIFEST, "notes.txt"]
    assert json.loads((out / pv.MANIFEST).read_text())["settings"]["pool"] == "cls"
    assert said == [f"overwrite removed 1 Parquet file(s) from {out}"]


def test_results_without_a_record_are_read_from_parquet_metadata_or_refused(tmp_path):
    tagged = tmp_path / "tagged"
    tagged.mkdir()
    pq.write_table(pv.with_metadata(pa.table({"x": [1]}), record()), tagged / "a.parquet")
    assert pv.recorded(str(tagged)) == record()  # the manifest lost: each file still says what made it
    legacy = tmp_path / "legacy"
    legacy.mkdir()
    pq.write_table(pa.table({"x": [1]}), legacy / "a.parquet")
    with pytest.raises(UserError, match="record nothing about what produced them .* --overwrite"):
        pv.claim(str(legacy), record(), log=QUIET)
    assert pv.recorded(str(tmp_path / "absent")) is None


def test_the_weights_digest_follows_the_bytes_not_the_folder(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    for d in (a, b):
        d.mkdir()
        (d / "model.safetensors").write_bytes(b"weights")
        (d / "config.json").write_text("{}")
    (b / "config.json").write_text('{"other": 1}')
    assert weights_digest(str(a)) == weights_digest(str(b))
    (b / "model.safetensors").write_bytes(b"weightz")
    assert weights_digest(str(a)) != weights_digest(str(b))
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="no weight file"):
        weights_digest(str(tmp_path / "empty"))
