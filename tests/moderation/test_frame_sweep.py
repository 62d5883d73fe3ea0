"""The GPU sweep's bookkeeping: stages in order, failures and overruns lose only their variant."""

from __future__ import annotations

import json
import tarfile
from pathlib import Path

import pytest

from moderation.frame_training import sweep


def _fake_stages(monkeypatch: pytest.MonkeyPatch, slow: str = "", failing: str = "") -> None:
    """Every stage a trivial process: ``failing`` (a variant's model folder name) fails its
    training, ``slow`` hangs in evaluation."""

    def command(module: str, *args: str) -> list[str]:
        joined = " ".join(args)
        if failing and module == "train" and f"/models/{failing} " in f"{joined} ":
            return ["false"]
        if slow and module == "evaluate" and f"/models/{slow} " in f"{joined} ":
            return ["sleep", "30"]
        return ["true"]

    monkeypatch.setattr(sweep, "_python", command)


def test_variants_parse_and_know_their_input_size() -> None:
    v = sweep.Variant.parse("s160:1884:--image-size 160 --unsafe-weight 3")
    assert (v.name, v.steps, v.image_size) == ("s160", 1884, 160)
    assert sweep.Variant.parse("base:3357:").image_size == 128
    assert sweep.Variant.parse("x:5:--image-size=144").image_size == 144
    with pytest.raises(SystemExit):
        sweep.Variant.parse("a/b:5:")


def test_a_failed_or_overrunning_variant_leaves_the_others_reported(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _fake_stages(monkeypatch, slow="slow", failing="broken")
    out = tmp_path / "out"
    results = sweep.main([
        "--work", str(tmp_path / "work"), "--out", str(out), "--device", "cpu", "--deadline", "4", "--parallel", "1",
        "--variant", "ok:5:", "--variant", "broken:5:--width 32", "--variant", "slow:5:--image-size 144",
    ])  # fmt: skip
    states = {r["name"]: r["state"] for r in results}
    assert states == {"ok": "done", "broken": "failed train", "slow": "stopped (running evaluate)"}
    summary = json.loads((out / "summary.json").read_text())
    assert [v["name"] for v in summary["variants"]] == ["ok", "broken", "slow"]
    with tarfile.open(out / "logs.tar.gz") as tar:
        assert "logs/broken.train.log" in tar.getnames()


def test_the_control_copies_the_shipped_model_instead_of_training(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _fake_stages(monkeypatch)
    results = sweep.main(["--work", str(tmp_path), "--out", str(tmp_path / "out"), "--variant", "shipped:0:"])
    assert results[0]["state"] == "done" and set(results[0]["seconds"]) == {"copy", "calibrate", "evaluate"}
    assert results[0]["training"]["steps"] > 0  # the shipped model's own record
    assert (tmp_path / "models" / "shipped" / "open_clip_model.safetensors").is_file()


def test_the_best_variants_travel_in_parts_small_enough_to_bring_back(tmp_path: Path) -> None:
    model = tmp_path / "models" / "big"
    model.mkdir(parents=True)
    (model / "open_clip_model.safetensors").write_bytes(b"\x01" * (sweep.PART + 1000))
    (tmp_path / "out").mkdir()
    parts = sweep._pack({"name": "big"}, tmp_path, tmp_path / "out")
    assert [p.name for p in parts] == ["big.tar.part0", "big.tar.part1"]
    assert all(p.stat().st_size <= sweep.PART for p in parts)
    joined = tmp_path / "joined.tar"
    joined.write_bytes(b"".join(p.read_bytes() for p in parts))
    with tarfile.open(joined) as tar:
        assert "big/model/open_clip_model.safetensors" in tar.getnames()


def test_the_best_is_the_highest_recall_within_the_false_positive_target() -> None:
    def result(name: str, recall: float, fp: float, top1: float = 0.9) -> dict[str, object]:
        targets = {"false_positives": 0.02}
        evaluation = {"unsafe_recall": recall, "false_positives": fp, "subject_top1": top1, "targets": targets}
        return {"name": name, "evaluation": evaluation}

    results = [result("noisy", 0.99, 0.05), result("good", 0.90, 0.015), result("fair", 0.85, 0.01)]
    results.append({"name": "failed", "evaluation": None})
    assert [r["name"] for r in sweep.best(results, 2)] == ["good", "fair"]
