"""lm-evaluation-harness on pruned variants (pruning.benchmarks): tiny models and a local
task for the plumbing; the demo model against a direct computation (slow)."""

from __future__ import annotations

import json
import re

import pytest
import torch

from pruning.apply import active_pruning, pruned
from pruning.benchmarks import (
    BenchmarkError,
    BenchmarkSettings,
    TaskDataUnavailable,
    TaskNotFound,
    Variant,
    accuracy_rows,
    benchmark_variants,
    config_hash,
    evaluate_model,
    harness_version,
    manifest_record,
    task_dir_fingerprint,
    variants_over_k,
)
from tests.benchmark_tasks import TASK, direct_accuracy, make_docs, write_task
from tests.tiny_models import reference_logits, tiny_ids, tiny_model, tiny_tokenizer


@pytest.fixture(scope="module")
def task_dir(tmp_path_factory):
    return write_task(tmp_path_factory.mktemp("tasks"), make_docs(12))


def _score(scores, metric):
    [s] = [s for s in scores if s.metric == metric]
    return s


def test_variants_over_k_take_each_orders_first_k_blocks():
    variants = variants_over_k({"knn": [3, 1, 2], "cosine": [2, 3]}, "layer", [2, 0, 3])
    assert variants == [
        Variant("layer", "knn", 0, ()), Variant("layer", "knn", 2, (1, 3)),
        Variant("layer", "knn", 3, (1, 2, 3)),
        Variant("layer", "cosine", 0, ()), Variant("layer", "cosine", 2, (2, 3)),
    ]  # K=3 is longer than the cosine order: left out, as the quality curves do
    assert variants[0].model_key() == variants[3].model_key()
    with pytest.raises(BenchmarkError, match="K values"):
        variants_over_k({"knn": [1]}, "layer", [-1])


@pytest.mark.parametrize("kwargs, message", [
    ({"tasks": ()}, "at least one task"),
    ({"tasks": ("a", "a")}, "more than once"),
    ({"tasks": ("a",), "limit": 0}, "limit"),
    ({"tasks": ("a",), "batch_size": 0}, "batch size"),
    ({"tasks": ("a",), "include_path": "/no/such/dir"}, "does not exist"),
])
def test_settings_refuse_bad_values_in_one_line(kwargs, message):
    with pytest.raises(BenchmarkError, match=message) as err:
        BenchmarkSettings(**kwargs).validate()
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("granularity", ["layer", "attn"])
def test_local_task_on_pruned_tiny_model_matches_direct_loglikelihoods(task_dir, granularity):
    model, tok = tiny_model("llama"), tiny_tokenizer()
    docs = make_docs(12)
    settings = BenchmarkSettings((TASK,), str(task_dir), limit=10, batch_size=4)
    variants = variants_over_k({"knn": [2, 1], "cosine": [1, 2]}, granularity, [0, 1, 2])
    before = reference_logits(model, tiny_ids())
    runs = benchmark_variants(model, tok, variants, settings, source="tiny")

    assert active_pruning(model) is None  # restored after every variant
    assert torch.equal(reference_logits(model, tiny_ids()), before)
    assert [r.variant for r in runs] == variants
    for run in runs:
        with pruned(model, granularity, run.variant.blocks):
            want = direct_accuracy(model, tok, docs[:10])
        assert _score(run.scores, "acc").value == want["acc"]
        assert _score(run.scores, "acc_norm").value == want["acc_norm"]
        assert _score(run.scores, "acc").samples == 10
    # K=0 of both criteria is the same model, scored once.
    assert runs[0].scores is runs[3].scores


def test_evaluate_model_does_not_change_the_callers_tokenizer(task_dir):
    model, tok = tiny_model("llama"), tiny_tokenizer()
    tok.pad_token = None
    side = tok.padding_side
    evaluate_model(model, tok, BenchmarkSettings((TASK,), str(task_dir), limit=2))
    assert tok.pad_token is None and tok.padding_side == side


def test_scores_record_harness_and_task_versions_and_config_hash(task_dir, tmp_path):
    model, tok = tiny_model("llama"), tiny_tokenizer()
    settings = BenchmarkSettings((TASK,), str(task_dir), limit=8)
    [run] = benchmark_variants(model, tok, [Variant(None, "unpruned", 0)], settings, source="t")
    acc = _score(run.scores, "acc")
    assert acc.harness_version == harness_version() == "0.4.13"
    assert acc.task_version == "2.0" and acc.task == TASK and acc.filter == "none"
    assert re.fullmatch(r"[0-9a-f]{64}", acc.config_hash)
    # The harness's closed-form standard error of a mean of 0/1 scores.
    assert acc.stderr == pytest.approx((acc.value * (1 - acc.value) / (8 - 1)) ** 0.5)
    assert acc.samples == 8
    record = json.loads(json.dumps(manifest_record([run])))
    assert record["harness"] == "lm-eval" and record["harness_version"] == "0.4.13"
    assert record["runs"][0]["scores"][0]["task_version"] == "2.0"
    assert record["runs"][0]["settings"]["limit"] == 8
    rows = accuracy_rows([run])
    assert {r["metric"] for r in rows} == {"acc", "acc_norm"} and rows[0]["k"] == 0

    # The same task over edited data has another hash; where the YAML lies does not matter.
    config = {"task": TASK, "dataset_kwargs": {"data_files": {"validation": str(task_dir / "docs.jsonl")}},
              "metadata": {"version": 2.0, "config_source": "/somewhere/a.yaml"}}
    moved = {**config, "metadata": {"version": 2.0, "config_source": "/elsewhere/b.yaml"}}
    assert config_hash(config) == config_hash(moved)
    other = write_task(tmp_path / "other", make_docs(12, seed=1))
    edited = {**config, "dataset_kwargs": {"data_files": {"validation": str(other / "docs.jsonl")}}}
    assert config_hash(edited) != config_hash(config)


def test_task_dir_fingerprint_changes_with_any_edit(tmp_path):
    folder = write_task(tmp_path / "t", make_docs(4))
    first = task_dir_fingerprint(str(folder))
    assert task_dir_fingerprint(str(folder)) == first
    (folder / "docs.jsonl").write_text(json.dumps(make_docs(4, seed=5)[0]) + "\n")
    assert task_dir_fingerprint(str(folder)) != first
    assert task_dir_fingerprint(None) is None


def test_unknown_task_is_named_with_close_matches(task_dir):
    model, tok = tiny_model("llama"), tiny_tokenizer()
    with pytest.raises(TaskNotFound) as err:
        evaluate_model(model, tok, BenchmarkSettings((TASK + "x",), str(task_dir)))
    msg = str(err.value)
    assert TASK + "x" in msg and TASK in msg and "\n" not in msg


def test_hub_task_offline_says_which_task_and_why(monkeypatch):
    import datasets.config

    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    model, tok = tiny_model("llama"), tiny_tokenizer()
    with pytest.raises(TaskDataUnavailable) as err:
        evaluate_model(model, tok, BenchmarkSettings(("hellaswag",), limit=2))
    msg = str(err.value)
    assert "'hellaswag'" in msg and "offline" in msg and "\n" not in msg
    assert "Traceback" not in msg


def test_a_missing_local_data_file_names_the_task(tmp_path):
    folder = write_task(tmp_path / "t", make_docs(4))
    (folder / "docs.jsonl").unlink()
    model, tok = tiny_model("llama"), tiny_tokenizer()
    with pytest.raises(BenchmarkError) as err:
        evaluate_model(model, tok, BenchmarkSettings((TASK,), str(folder)))
    assert TASK in str(err.value) and "\n" not in str(err.value)


@pytest.mark.slow
def test_lm_eval_on_pruned_demo_model_equals_direct_computation(tmp_path, demo_cache_dir,
                                                                 monkeypatch):
    """lm-eval on the in-memory demo model with K=2 layers pruned gives exactly the accuracy
    that the choices' log-likelihoods computed here give."""
    from analysis.models import load_model
    from analysis.settings import ModelSettings

    monkeypatch.setenv("ENTRODROP_CACHE_DIR", demo_cache_dir)
    loaded = load_model(ModelSettings("demo:smollm2-135m", device="cpu", dtype="float32"))
    docs = make_docs(10, seed=3)
    folder = write_task(tmp_path / "tasks", docs)
    settings = BenchmarkSettings((TASK,), str(folder), limit=8, batch_size=4)
    variants = variants_over_k({"reverse": [28, 27, 26]}, "layer", [0, 2])
    runs = benchmark_variants(loaded.model, loaded.tokenizer, variants, settings,
                              source=loaded.spec)
    assert runs[1].variant.blocks == (27, 28)
    lls = []
    for run in runs:
        with pruned(loaded.model, "layer", run.variant.blocks):
            want = direct_accuracy(loaded.model, loaded.tokenizer, docs[:8])
        assert _score(run.scores, "acc").value == want["acc"]
        assert _score(run.scores, "acc_norm").value == want["acc_norm"]
        assert _score(run.scores, "acc").samples == 8
        lls.append(want["lls"])
    assert lls[0] != lls[1]  # the harness saw a different model at K=2


def test_a_task_added_to_the_directory_later_is_found(tmp_path):
    folder = write_task(tmp_path / "t", make_docs(4))
    model, tok = tiny_model("llama"), tiny_tokenizer()
    evaluate_model(model, tok, BenchmarkSettings((TASK,), str(folder), limit=1))
    write_task(folder, make_docs(4), name="entrodrop_added_later")
    scores = evaluate_model(model, tok, BenchmarkSettings(("entrodrop_added_later",),
                                                          str(folder), limit=1))
    assert {s.task for s in scores} == {"entrodrop_added_later"}


def test_record_benchmarks_replaces_a_run_with_the_same_settings_only(tmp_path):
    from pruning.manifest import ManifestError, read_manifest, record_benchmarks

    with pytest.raises(ManifestError, match="no entrodrop.json"):
        record_benchmarks(tmp_path, {"runs": []})
    (tmp_path / "entrodrop.json").write_text(json.dumps({"method": "block", "k": 1}))

    def run(limit, value):
        return {"settings": {"tasks": [TASK], "limit": limit},
                "scores": [{"metric": "acc", "value": value}]}

    record_benchmarks(tmp_path, {"harness": "lm-eval", "runs": [run(4, 0.5)]})
    record_benchmarks(tmp_path, {"harness": "lm-eval", "runs": [run(8, 0.25)]})
    record_benchmarks(tmp_path, {"harness": "lm-eval", "runs": [run(4, 0.75)]})
    record = read_manifest(tmp_path)
    assert record["k"] == 1  # the rest of the manifest is kept
    assert [(r["settings"]["limit"], r["scores"][0]["value"])
            for r in record["benchmarks"]["runs"]] == [(8, 0.25), (4, 0.75)]
    assert read_manifest(tmp_path / "elsewhere") is None
    (tmp_path / "entrodrop.json").write_text("{not json")
    with pytest.raises(ManifestError, match="cannot read"):
        read_manifest(tmp_path)


def test_variants_over_k_take_prune_sets_per_k_for_criteria_whose_sets_are_not_nested():
    from pruning.benchmarks import variants_over_k
    got = variants_over_k({"angular_span": {0: [], 1: [2], 2: [1, 0]}, "knn": [2, 0]},
                          "layer", [0, 1, 2, 3])
    assert [(v.criterion, v.k, v.blocks) for v in got] == [
        ("angular_span", 0, ()), ("angular_span", 1, (2,)), ("angular_span", 2, (0, 1)),
        ("knn", 0, ()), ("knn", 1, (2,)), ("knn", 2, (0, 2))]
