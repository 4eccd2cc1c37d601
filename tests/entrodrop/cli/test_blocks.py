"""Block commands (entrodrop.cli.blocks): prune-list, export, evaluate (tiny models)."""

import json

import pytest
from transformers import AutoModelForCausalLM

from tests.entrodrop.cli.support import ANALYSIS, run_cli


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("cli-cache")


def test_prune_list_order_blocks_and_rank_string(tiny_llama_dir, cache):
    r = run_cli(["--quiet", "prune-list", "--model", str(tiny_llama_dir), *ANALYSIS,
                 "--granularity", "attn", "--criterion", "knn", "--k", "2", "--policy", "manual",
                 "--s-start", "1", "--allow-last"], cache)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert list(out) == ["granularity", "criterion", "k", "order", "blocks", "s_start", "policy",
                         "rank_string", "rank_string_format", "prunable"]
    assert sorted(out["order"]) == [1, 2, 3] and out["prunable"] == [1, 2, 3]
    assert out["blocks"] == out["order"][:2]
    ranks = [int(x) for x in out["rank_string"].split(",")]
    assert [ranks[b] for b in out["order"]] == [0, 1, 2]


def test_prune_list_rejects_k_beyond_candidates(tiny_llama_dir, cache):
    r = run_cli(["--quiet", "prune-list", "--model", str(tiny_llama_dir), *ANALYSIS, "--k", "9"], cache)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "k" in r.stderr.lower() and len(r.stderr.strip().splitlines()) == 1


def test_export_layer_reloads_with_stock_transformers(tiny_llama_dir, cache, tmp_path):
    out = tmp_path / "pruned"
    args = ["--quiet", "export", "--model", str(tiny_llama_dir), *ANALYSIS, "--granularity", "layer",
            "--criterion", "cosine", "--k", "1", "--policy", "manual", "--s-start", "1",
            "--out", str(out)]
    r = run_cli(args, cache)
    assert r.returncode == 0, r.stderr
    model = AutoModelForCausalLM.from_pretrained(out)
    assert model.config.num_hidden_layers == 3
    manifest = json.loads((out / "entrodrop.json").read_text())
    for key in ("source_model", "calibration", "granularity", "criterion", "s_start", "k",
                "blocks", "scores"):
        assert key in manifest
    assert manifest["k"] == 1 and len(manifest["blocks"]) == 1
    assert (out / "README.md").is_file()
    # The same target again is refused without --overwrite, and accepted with it.
    again = run_cli(args, cache)
    assert again.returncode == 2 and "overwrite" in again.stderr
    assert run_cli([*args, "--overwrite"], cache).returncode == 0


def test_evaluate_prints_pruned_figures_and_curves(tiny_llama_dir, cache, tmp_path):
    out = tmp_path / "eval.json"
    r = run_cli(["--quiet", "evaluate", "--model", str(tiny_llama_dir), *ANALYSIS, "--held-out", "2",
                 "--granularity", "attn", "--criterion", "knn", "--k", "1", "--policy", "reference",
                 "--ks", "0..1", "--repeats", "1", "--out", str(out)], cache)
    assert r.returncode == 0, r.stderr
    data = json.loads(out.read_text())
    assert data["perplexity"] > 1 and data["pruned"]["blocks"] == [2]
    assert data["held_out_windows"] == 2 and data["seqlen"] == 16
    assert data["pruned"]["speed"]["params_pruned"] < data["pruned"]["speed"]["params_base"]
    rows = data["curves"]
    assert {(r["granularity"], r["criterion"], r["k"]) for r in rows} == {
        (g, c, k) for g in ("layer", "attn") for c in ("knn", "cosine") for k in (0, 1)}
    assert all(r["kl"] == pytest.approx(0.0, abs=1e-6) for r in rows if r["k"] == 0)
    assert "perplexity" in r.stdout


def test_evaluate_width_curves(tiny_llama_dir, cache, tmp_path):
    out = tmp_path / "width.json"
    r = run_cli(["--quiet", "evaluate", "--model", str(tiny_llama_dir), "--calibration", "builtin:random",
                 "--samples", "4", "--seqlen", "16", "--device", "cpu", "--held-out", "2",
                 "--width-ratios", "1,0.5", "--width-mode", "uniform", "--out", str(out)], cache)
    assert r.returncode == 0, r.stderr
    rows = json.loads(out.read_text())["width_curves"]
    assert rows[0]["criterion"] == "unpruned"
    assert {(x["criterion"], x["ratio"]) for x in rows[1:]} == {
        (c, q) for c in ("taylor-entropy", "taylor-ce", "magnitude") for q in (1.0, 0.5)}
    for x in rows[1:]:
        if x["ratio"] == 1.0:  # keeping every neuron changes nothing
            assert x["kl"] == pytest.approx(0.0, abs=1e-6) and x["top1"] == 1.0


def test_prune_list_compares_several_criteria_with_overlaps_and_kendall_tau(tiny_llama_dir, cache):
    r = run_cli(["--quiet", "prune-list", "--model", str(tiny_llama_dir), *ANALYSIS,
                 "--granularity", "layer", "--criteria", "cosine,angular_span,reverse,random",
                 "--k", "2", "--policy", "manual", "--s-start", "1", "--allow-last"], cache)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    names = ["cosine", "angular_span", "reverse", "random:0", "random:1", "random:2"]
    assert list(out["decisions"]) == names == out["comparison"]["criteria"]
    assert out["decisions"]["reverse"]["blocks"] == [3, 2]
    assert out["decisions"]["random:1"]["criterion_details"]["seed"] == 1
    span = out["decisions"]["angular_span"]["blocks"]
    assert sorted(span) in ([1, 2], [2, 3])  # two consecutive prunable layers
    assert [row[i] for i, row in enumerate(out["comparison"]["overlap"])] == [2] * 6
    assert out["comparison"]["kendall_tau"][2][2] == 1.0


def test_prune_list_refuses_an_unknown_criterion_and_a_k_past_the_greedy_steps(tiny_llama_dir, cache):
    r = run_cli(["--quiet", "prune-list", "--model", str(tiny_llama_dir), *ANALYSIS,
                 "--criterion", "entropy"], cache)
    assert r.returncode == 2 and "criterion must be one of" in r.stderr
    r = run_cli(["--quiet", "prune-list", "--model", str(tiny_llama_dir), *ANALYSIS,
                 "--criterion", "ppl_greedy", "--greedy-steps", "1", "--greedy-windows", "1",
                 "--k", "2", "--policy", "manual", "--s-start", "1"], cache)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "largest K that ppl_greedy decides" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


def test_evaluate_curves_and_export_with_the_perplexity_greedy_criterion(tiny_llama_dir, cache, tmp_path):
    out = tmp_path / "eval.json"
    r = run_cli(["--quiet", "evaluate", "--model", str(tiny_llama_dir), *ANALYSIS, "--held-out", "2",
                 "--policy", "manual", "--s-start", "1", "--ks", "0..2", "--repeats", "1",
                 "--criteria", "ppl_greedy,angular_span,random:5", "--greedy-windows", "2",
                 "--greedy-steps", "2", "--out", str(out)], cache)
    assert r.returncode == 0, r.stderr
    data = json.loads(out.read_text())
    got = {(row["granularity"], row["criterion"], row["k"]) for row in data["curves"]}
    assert got == {(g, c, k) for g in ("layer", "attn")
                   for c in ("ppl_greedy", "angular_span", "random:5") for k in (0, 1, 2)}
    search = data["criteria_details"]["layer"]["ppl_greedy"]["search"]
    assert len(search["order"]) == 2 and search["windows"] == [2, 16]
    assert data["criteria_details"]["attn"]["random:5"]["seed"] == 5

    target = tmp_path / "greedy-export"
    r = run_cli(["--quiet", "export", "--model", str(tiny_llama_dir), *ANALYSIS, "--granularity",
                 "layer", "--criterion", "ppl_greedy", "--k", "1", "--policy", "manual",
                 "--s-start", "1", "--greedy-windows", "2", "--greedy-steps", "1",
                 "--out", str(target)], cache)
    assert r.returncode == 0, r.stderr
    manifest = json.loads((target / "entrodrop.json").read_text())
    assert manifest["criterion"] == "ppl_greedy"
    assert manifest["blocks"] == manifest["criterion_details"]["search"]["order"]


def test_evaluate_curve_leaves_out_a_k_that_would_prune_every_block(tiny_llama_dir, cache,
                                                                    tmp_path):
    layers = json.loads((tiny_llama_dir / "config.json").read_text())["num_hidden_layers"]
    out = tmp_path / "eval-all.json"
    r = run_cli(["--quiet", "evaluate", "--model", str(tiny_llama_dir), *ANALYSIS,
                 "--held-out", "2", "--granularity", "attn", "--criterion", "knn", "--k", "1",
                 "--policy", "manual", "--s-start", "0", "--allow-last",
                 "--ks", f"0,{layers - 1},{layers}", "--curve-granularities", "attn",
                 "--repeats", "1", "--out", str(out)], cache)
    assert r.returncode == 0, r.stderr
    assert f"K = {layers} left out: at most {layers - 1} blocks" in r.stderr
    rows = json.loads(out.read_text())["curves"]
    assert {row["k"] for row in rows} == {0, layers - 1}


def test_export_attn_in_the_vllm_layout(tiny_llama_dir, cache, tmp_path):
    out = tmp_path / "pruned-vllm"
    r = run_cli(["--quiet", "export", "--model", str(tiny_llama_dir), *ANALYSIS,
                 "--granularity", "attn", "--criterion", "knn", "--k", "2", "--policy", "manual",
                 "--s-start", "1", "--layout", "vllm", "--out", str(out)], cache)
    assert r.returncode == 0, r.stderr
    assert "layout vllm" in r.stderr
    config = json.loads((out / "config.json").read_text())
    manifest = json.loads((out / "entrodrop.json").read_text())
    assert config["model_type"] == "nemotron-nas" and manifest["layout"] == "vllm"
    no_op = [i for i, b in enumerate(config["block_configs"]) if b["attention"]["no_op"]]
    assert no_op == manifest["blocks"] == sorted(manifest["blocks"])
    model = AutoModelForCausalLM.from_pretrained(out, trust_remote_code=True)
    assert type(model).__name__ == "EntroDropDeciLlamaForCausalLM"


def test_export_in_the_vllm_layout_refuses_other_families_before_the_analysis(tmp_path):
    from tests.tiny_models import save_tiny

    source = save_tiny("qwen3", tmp_path / "tiny-qwen3")
    own_cache = tmp_path / "cache"
    r = run_cli(["--quiet", "export", "--model", str(source), *ANALYSIS, "--granularity", "attn",
                 "--k", "1", "--layout", "vllm", "--out", str(tmp_path / "out")], own_cache)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and "layout 'transformers'" in r.stderr
    assert not (tmp_path / "out").exists()
    assert not list(own_cache.rglob("*.json"))  # refused before any profile was computed
