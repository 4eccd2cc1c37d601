"""The Budget page's lm-eval section (app/views/benchmarks_section.py), tiny model, local task."""

from __future__ import annotations

from transformers import AutoModelForCausalLM, AutoTokenizer

from pruning.apply import pruned
from tests.benchmark_tasks import TASK, direct_accuracy, make_docs, write_task


def _fill(at, task_dir, tasks=TASK):
    at.text_input(key="bench_include_path").set_value(str(task_dir))
    at.text_input(key="bench_tasks").set_value(tasks)
    at.number_input(key="bench_limit").set_value(4)
    at.multiselect(key="bench_ks").set_value([0, 1, 2])
    return at.run()


def test_benchmarks_chart_accuracy_against_k_and_are_cached(ui, tmp_path, tiny_model_dir):
    task_dir = write_task(tmp_path / "tasks", make_docs(6))
    at = ui.analysed(seed=41)
    at.slider(key="k").set_value(1).run()
    at.switch_page("views/budget.py").run()
    _fill(at, task_dir)
    ui.assert_clean(at)
    assert "bench_result" not in at.session_state  # nothing runs until the button is pressed
    at.button(key="run_benchmarks").click().run()
    ui.assert_clean(at)
    [chart] = [c for c in ui.charts(at) if TASK in c["layout"]["title"]["text"]]
    assert {t["name"] for t in chart["data"]} == {"knn", "cosine"}
    assert all(list(t["x"]) == [0, 1, 2] for t in chart["data"])
    rows = at.session_state["bench_result"]["rows"]
    assert {(r["criterion"], r["k"]) for r in rows} == {(c, k) for c in ("knn", "cosine")
                                                        for k in (0, 1, 2)}
    # The values are what the pruned model's own log-likelihoods give.
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    for r in rows:
        granularity = at.session_state["_view"].granularity
        with pruned(model, granularity, r["blocks"]):
            assert r["value"] == direct_accuracy(model, tok, make_docs(6)[:4])[r["metric"]]

    # Another session with the same settings gets them without pressing the button ...
    other = ui.analysed(seed=41)
    other.slider(key="k").set_value(1).run()
    other.switch_page("views/budget.py").run()
    _fill(other, task_dir)
    assert other.session_state["bench_result"]["rows"] == rows
    # ... but not once the task's data changed.
    write_task(task_dir, make_docs(6, seed=9))
    other.run()
    assert "bench_result" not in other.session_state


def test_unknown_benchmark_task_is_one_error_line(ui, tmp_path):
    task_dir = write_task(tmp_path / "tasks", make_docs(3))
    at = ui.analysed(seed=41)
    at.switch_page("views/budget.py").run()
    _fill(at, task_dir, tasks="no_such_task_abc")
    at.button(key="run_benchmarks").click().run()
    assert not at.exception
    [error] = at.error
    assert "no_such_task_abc" in error.value and "\n" not in error.value.strip()


def test_benchmarks_are_off_while_the_analysis_is_stale_like_the_other_results(ui, tmp_path):
    task_dir = write_task(tmp_path / "tasks", make_docs(3))
    at = ui.analysed(seed=42)
    analysed = at.session_state["analysis"].request.model.spec
    at.switch_page("views/model.py").run()
    at.radio(key="model_source").set_value("local").run()
    at.text_input(key="model_path").set_value("/nonexistent/tiny-model").run()
    at.switch_page("views/budget.py").run()
    _fill(at, task_dir)
    ui.assert_clean(at)
    assert any("Stale: these results" in w.value for w in at.warning)
    # The same rule as the quality curves and the side-by-side text on this page.
    assert at.button(key="run_budget").disabled and at.button(key="run_generate").disabled
    assert at.button(key="run_benchmarks").disabled
    assert any("Benchmarks are off while the analysis is stale" in c.value for c in at.caption)
    # Back to the analysed model: the benchmarks can run again.
    at.switch_page("views/model.py").run()
    at.text_input(key="model_path").set_value(analysed).run()
    at.switch_page("views/budget.py").run()
    _fill(at, task_dir)  # the section's fields are not kept while another page shows
    assert not at.button(key="run_benchmarks").disabled
    assert not any("Benchmarks are off" in c.value for c in at.caption)
