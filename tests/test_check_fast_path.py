"""benchmarks/check_fast_path.py: the fast path's correctness check. Its run names decode to the precisions and
perturbations the report says they are, its spread comparison counts what its verdict lines claim, and a tiny run with
twins ends with every run's numbers written out."""

from __future__ import annotations

import importlib.util
import json
import math
import statistics
import sys
from pathlib import Path

import pytest

CHECK = Path(__file__).resolve().parents[1] / "benchmarks" / "check_fast_path.py"


@pytest.fixture(scope="module")
def check():
    spec = importlib.util.spec_from_file_location("check_fast_path", CHECK)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    yield module
    del sys.modules[spec.name]


def test_run_names_decode_to_precision_and_perturbation(check):
    assert check.run_spec("fp32") == ("float32", None, 0.0, 1)
    assert check.run_spec("fast") == ("bfloat16", None, 0.0, 1)
    assert check.run_spec("fp32-twin") == check.run_spec("fp32~1")  # the single twin is the first of the twins
    assert check.run_spec("fast~3") == ("bfloat16", None, 1e-6, 3)
    assert check.twin_runs(2) == ["fp32~1", "fp32~2", "fast~1", "fast~2"]
    assert check.run_spec("fast~2", "float16") == ("float16", None, 1e-6, 2)  # --half float16: the fast runs only
    assert check.run_spec("fp32", "float16") == check.run_spec("fp32")
    with pytest.raises(KeyError):
        check.run_spec("fp16~1")


def test_fast_path_in_float16_is_another_setup_with_an_unscaled_row(check, tmp_path):
    output = tmp_path / "fp16.md"
    quick = ["--quick", "--steps", "2", "--eval-samples", "2", "--runs", "fp32", "fast"]
    check.main([*quick, "--half", "float16", "--output", str(output)])
    numbers = json.loads(output.with_suffix(".json").read_text())
    assert numbers["setup"].endswith("; fast in float16") and len(numbers["fast"]["losses"]) == 2
    gap = numbers["same_weights"]["the start"]
    assert gap["half"] == "float16" and {
        len(gap[label]["grad_cosine"]) for label in (*check.GAP_PARTS, check.UNSCALED)
    } == {4}
    assert "| in float16 |" in output.read_text() and f"| {check.UNSCALED} |" in output.read_text()
    with pytest.raises(SystemExit, match=r"--reuse .*another setup"):  # bf16 runs are not fp16 runs
        check.main([*quick, "--reuse", str(output.with_suffix(".json"))])


def test_welch_difference_and_standard_error(check):
    difference, error = check.welch([1.0, 2.0, 3.0], [2.0, 4.0, 6.0, 8.0])
    assert difference == pytest.approx(5.0 - 2.0)
    assert error == pytest.approx(math.sqrt(1.0 / 3 + statistics.variance([2.0, 4.0, 6.0, 8.0]) / 4))


def test_rank_test_share_and_exact_p_value(check):
    # 3 vs 3, every other value higher: 2 of the C(6, 3) = 20 splits are as extreme (all higher or all lower)
    assert check.rank_test([1.0, 2.0, 3.0], [4.0, 5.0, 6.0]) == (1.0, pytest.approx(0.1))
    assert check.rank_test([1.0, 2.0, 3.0], [0.5, 1.5, 2.5]) == (pytest.approx(1 / 3), pytest.approx(0.7))
    assert check.rank_test([1.0, 2.0], [1.0, 2.0]) == (0.5, 1.0)  # ties count half
    share, p_value = check.rank_test([float(i) for i in range(12)], [float(i) for i in range(12, 24)])
    assert share == 1.0 and p_value < 1e-4  # C(24, 12) > 200,000 splits: the normal approximation


def _run(losses: dict[int, float], scores: dict[str, float]) -> dict:
    return {"losses": losses, "scores": scores, "held_in": {"ocr": scores["yes_no"] / 2}}


def test_spread_report_counts_steps_and_tasks_within_the_spread_and_the_bar(check):
    # step 5: fast 10% above fp32 with a spread of 0.1 (far outside); step 10: 1% apart inside a wide spread
    results = {
        "fp32": _run({5: 1.0, 10: 2.0}, {"yes_no": 50.0}),
        "fp32~1": _run({5: 1.1, 10: 2.5}, {"yes_no": 60.0}),
        "fast": _run({5: 1.15, 10: 2.0}, {"yes_no": 70.0}),
        "fast~1": _run({5: 1.16, 10: 2.55}, {"yes_no": 71.0}),
    }
    text = check.spread_report(results)
    assert "fp32 = 2 runs" in text and "fast = 2 runs" in text
    assert "within 2 standard errors: at 1 of 2 logged steps" in text
    assert "on 0 of 1 zero-shot tasks" in text  # 15.5 points apart, standard error 5.0
    assert "| held-in ocr | 27.5 (25.0-30.0) | 35.2 (35.0-35.5) |" in text  # reported, not counted
    assert "Within the bar (2% loss, 1 point zero-shot): at 1 of 2 logged steps" in text
    difference, error = check.welch([1.0, 1.1], [1.15, 1.16])
    assert f"{difference / 1.05:+.2%} ± {error / 1.05:.2%}" in text


def test_tiny_run_with_twins_writes_every_run(check, tmp_path):
    output = tmp_path / "report.md"
    argv = ["--quick", "--steps", "2", "--twins", "1", "--eval-samples", "2", "--output", str(output)]
    check.main(argv)  # the exit status is the 2%/1-point bar's verdict, not asserted on random weights
    numbers = json.loads(output.with_suffix(".json").read_text())
    runs = ["fp32", "fast", "fp32~1", "fast~1"]
    assert all(run in numbers for run in runs) and "fp32-twin" not in numbers  # fp32-twin is fp32~1
    assert {len(numbers[run]["losses"]) for run in runs} == {2}
    gaps = numbers["same_weights"]  # the precision alone, at the start and where fp32's training left the weights
    assert list(gaps) == ["the start", check.TRAINED]
    for gap in gaps.values():
        assert {len(gap[label]["image_grad_cosine"]) for label in check.GAP_PARTS} == {4}
    text = output.read_text()
    assert "Spreads: fp32 = 2 runs" in text
    assert text.count("| fast - fp32 |") == 1  # the spread table, beside the main one without twin columns
    first = [numbers[run]["losses"]["1"] for run in runs]  # JSON keys are strings
    difference, error = check.welch(first[0::2], first[1::2])
    fp32_mean = statistics.fmean(first[0::2])
    assert f"| 1 | {fp32_mean:.4f} (" in text
    assert f"{difference / fp32_mean:+.2%} ± {error / fp32_mean:.2%}" in text


def test_reuse_extends_earlier_twins_without_training_them_again(check, tmp_path):
    first, second = tmp_path / "first.md", tmp_path / "second.md"
    quick = ["--quick", "--steps", "2", "--eval-samples", "2"]
    check.main([*quick, "--twins", "1", "--output", str(first)])
    check.main([*quick, "--twins", "2", "--reuse", str(first.with_suffix(".json")), "--output", str(second)])
    before, after = (json.loads(path.with_suffix(".json").read_text()) for path in (first, second))
    for run in ("fp32", "fast", "fp32~1", "fast~1"):
        assert after[run]["losses"] == before[run]["losses"] and after[run]["reused"]
    assert not after["fp32~2"].get("reused") and len(after["fast~2"]["losses"]) == 2
    text = second.read_text()
    assert "Reused from an earlier run: fp32, fast, fp32~1, fast~1." in text and "fp32 = 3 runs" in text
    assert list(after["same_weights"]) == ["the start"] and check.TRAINED not in text  # fp32 was not trained here
    with pytest.raises(SystemExit, match=r"--reuse .*another setup"):
        check.main(["--quick", "--steps", "3", "--eval-samples", "2", "--reuse", str(first.with_suffix(".json"))])
    with pytest.raises(SystemExit, match=r"--reuse .*evaluated on 2 samples per task, not 1"):
        check.main(["--quick", "--steps", "2", "--eval-samples", "1", "--reuse", str(first.with_suffix(".json"))])
    unrecorded = tmp_path / "unrecorded.json"  # written before --reuse existed: no evaluation size
    unrecorded.write_text(json.dumps({k: v for k, v in before.items() if k != "eval_samples"}))
    with pytest.raises(SystemExit, match=r"--reuse .*does not record its evaluation size"):
        check.main([*quick, "--reuse", str(unrecorded)])


def test_an_interrupted_run_keeps_the_runs_it_finished_for_reuse(check, tmp_path, monkeypatch):
    output = tmp_path / "report.md"
    quick = ["--quick", "--steps", "2", "--eval-samples", "2", "--twins", "1"]
    train_run = check.train_run

    def stopped_at_fast_1(built, start, parts, config, run, *rest):
        if run == "fast~1":  # as a time limit or Ctrl-C would stop it, three runs in
            raise KeyboardInterrupt
        return train_run(built, start, parts, config, run, *rest)

    monkeypatch.setattr(check, "train_run", stopped_at_fast_1)
    with pytest.raises(KeyboardInterrupt):
        check.main([*quick, "--output", str(output)])
    kept = json.loads(output.with_suffix(".json").read_text())
    assert [run for run in kept if isinstance(kept[run], dict) and "losses" in kept[run]] == ["fp32", "fast", "fp32~1"]
    assert not output.exists() and not list(tmp_path.glob("*.partial"))  # no report yet, no half-written file
    monkeypatch.setattr(check, "train_run", train_run)
    check.main([*quick, "--reuse", str(output.with_suffix(".json")), "--output", str(output)])  # in place
    after = json.loads(output.with_suffix(".json").read_text())
    assert all(
        after[run]["losses"] == kept[run]["losses"] and after[run]["reused"] for run in ("fp32", "fast", "fp32~1")
    )
    assert (
        not after["fast~1"].get("reused") and "Reused from an earlier run: fp32, fast, fp32~1." in output.read_text()
    )
