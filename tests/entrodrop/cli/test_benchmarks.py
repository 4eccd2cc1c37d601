"""`entrodrop evaluate --tasks` and `export --tasks` (lm-eval on a local task, tiny model)."""

import json

import pytest
from transformers import AutoModelForCausalLM, AutoTokenizer

from pruning.apply import pruned
from tests.benchmark_tasks import TASK, direct_accuracy, make_docs, write_task
from tests.entrodrop.cli.support import ANALYSIS, run_cli

BENCH = ["--policy", "manual", "--s-start", "1", "--allow-last", "--held-out", "2"]


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("cli-cache")


@pytest.fixture(scope="module")
def task_dir(tmp_path_factory):
    return write_task(tmp_path_factory.mktemp("tasks"), make_docs(8))


def test_evaluate_tasks_prints_accuracy_against_k_per_criterion(tiny_llama_dir, cache,
                                                                task_dir, tmp_path):
    out = tmp_path / "eval.json"
    r = run_cli(["--quiet", "evaluate", "--model", str(tiny_llama_dir), *ANALYSIS, *BENCH,
                 "--tasks", TASK, "--include-path", str(task_dir), "--limit", "6",
                 "--ks", "0,1,2", "--criteria", "knn,cosine", "--curve-granularities", "layer",
                 "--out", str(out)], cache)
    assert r.returncode == 0, r.stderr
    assert "loglikelihood requests" not in r.stderr  # --quiet: no harness progress bars
    lines = r.stdout.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("lm-eval 0.4.13"))
    assert lines[start + 1].split() == ["gran", "criterion", "task", "metric", "K=0", "K=1", "K=2"]
    table = [line.split() for line in lines[start + 2:]]
    assert {(row[1], row[3]) for row in table} == {(c, m) for c in ("knn", "cosine")
                                                   for m in ("acc", "acc_norm")}
    bench = json.loads(out.read_text())["benchmarks"]
    assert bench["harness"] == "lm-eval" and bench["harness_version"] == "0.4.13"
    assert bench["settings"] == {"tasks": [TASK], "include_path": str(task_dir), "limit": 6,
                                 "batch_size": bench["settings"]["batch_size"]}
    rows = bench["rows"]
    assert {(r["criterion"], r["k"]) for r in rows} == {(c, k) for c in ("knn", "cosine")
                                                        for k in (0, 1, 2)}
    # Each printed accuracy is the one computed here from the model's log-likelihoods.
    model = AutoModelForCausalLM.from_pretrained(tiny_llama_dir).eval()
    tok = AutoTokenizer.from_pretrained(tiny_llama_dir)
    docs = make_docs(8)[:6]
    for row in rows:
        with pruned(model, "layer", row["blocks"]):
            want = direct_accuracy(model, tok, docs)
        assert row["value"] == want[row["metric"]], row
        assert row["samples"] == 6 and row["task_version"] == "2.0"
        assert len(row["blocks"]) == row["k"]


def test_export_records_benchmarks_and_evaluate_record_adds_to_them(tiny_llama_dir, cache,
                                                                     task_dir, tmp_path):
    out = tmp_path / "pruned"
    r = run_cli(["--quiet", "export", "--model", str(tiny_llama_dir), *ANALYSIS, "--granularity",
                 "layer", "--criterion", "cosine", "--k", "1", "--policy", "manual",
                 "--s-start", "1", "--tasks", TASK, "--include-path", str(task_dir),
                 "--limit", "4", "--out", str(out)], cache)
    assert r.returncode == 0, r.stderr
    manifest = json.loads((out / "entrodrop.json").read_text())
    record = manifest["benchmarks"]
    assert record["harness_version"] == "0.4.13"
    [run] = record["runs"]
    assert run["variant"] == {"granularity": "layer", "criterion": "cosine", "k": 1,
                              "blocks": manifest["blocks"]}
    exported_acc = {s["metric"]: s["value"] for s in run["scores"]}

    # The exported folder scores the same (it is the same model), labelled from its manifest.
    r = run_cli(["--quiet", "evaluate", "--model", str(out), "--calibration", "builtin:random",
                 "--samples", "6", "--seqlen", "16", "--device", "cpu", "--held-out", "2",
                 "--tasks", TASK, "--include-path", str(task_dir), "--limit", "4", "--record",
                 "--batch-size", "2"], cache)
    assert r.returncode == 0, r.stderr
    record = json.loads((out / "entrodrop.json").read_text())["benchmarks"]
    assert len(record["runs"]) == 2  # other settings (batch size): kept side by side
    folder_run = record["runs"][1]
    assert folder_run["variant"]["criterion"] == "cosine" and folder_run["variant"]["k"] == 1
    assert {s["metric"]: s["value"] for s in folder_run["scores"]} == exported_acc


def test_evaluate_hub_task_offline_fails_in_one_line(tiny_llama_dir, cache):
    r = run_cli(["--quiet", "evaluate", "--model", str(tiny_llama_dir), *ANALYSIS,
                 "--held-out", "2", "--tasks", "hellaswag", "--limit", "2"], cache)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    [line] = [ln for ln in r.stderr.splitlines() if "hellaswag" in ln]
    assert "offline" in line


@pytest.mark.parametrize("args, message", [
    (["--tasks", "no_such_task_xyz"], "no_such_task_xyz"),
    (["--limit", "3"], "need --tasks"),
    (["--tasks", TASK, "--limit", "0"], "limit"),
    (["--tasks", TASK, "--record"], "export folder"),
    (["--tasks", TASK, "--load", "stream"], "whole model in memory"),
])
def test_evaluate_refuses_bad_benchmark_options_before_loading(tiny_llama_dir, cache, task_dir,
                                                                args, message):
    r = run_cli(["--quiet", "evaluate", "--model", str(tiny_llama_dir), *ANALYSIS,
                 "--include-path", str(task_dir), *args], cache)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert message in r.stderr and len(r.stderr.strip().splitlines()) == 1
