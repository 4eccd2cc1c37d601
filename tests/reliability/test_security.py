"""Security: no untrusted code runs (remote code, pickles), and the app binds to localhost."""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from analysis.models import ModelLoadError, load_model
from analysis.settings import ModelSettings
from tests.reliability.support import (
    REPO,
    SMALL,
    cli_env,
    pickle_bin_folder,
    remote_code_folder,
    run_cli,
)

SOURCE_DIRS = ("analysis", "pruning", "entrodrop", "app", "scripts", "bench")


# --------------------------------------------------------------------------- remote code


def test_remote_code_runs_only_when_asked_for(tiny_llama_dir, tmp_path):
    # Guards: --trust-remote-code is what runs a model's own code (the other half, that it
    # never runs without the flag, is in test_bad_input); the marker proves it ran.
    marker = tmp_path / "ran"
    folder = remote_code_folder(tiny_llama_dir, tmp_path / "remote", marker)
    r = run_cli(["analyze", "--model", folder, "--calibration", "builtin:random", *SMALL,
                 "--trust-remote-code", "--out", tmp_path / "p.json"], tmp_path / "cache")
    assert r.returncode == 0, r.stderr[-3000:]
    assert marker.read_text() == "remote code ran"
    assert json.loads((tmp_path / "p.json").read_text())["model"]["architecture"] == "MarkedLlama"


def test_trusting_one_model_does_not_trust_the_next(tiny_llama_dir, tmp_path):
    # Guards: trust is per model: after a trusted model's code ran, a second model (its
    # config, or only its tokenizer, asking for code) loaded without trust runs nothing.
    trusted = remote_code_folder(tiny_llama_dir, tmp_path / "trusted", tmp_path / "a-ran")
    untrusted = remote_code_folder(tiny_llama_dir, tmp_path / "untrusted", tmp_path / "b-ran")
    tok_only = _tokenizer_code_folder(tiny_llama_dir, tmp_path / "tok-only", tmp_path / "c-ran")
    script = textwrap.dedent(f"""
        from analysis.models import ModelLoadError, load_model
        from analysis.settings import ModelSettings
        load_model(ModelSettings({str(trusted)!r}, device="cpu", trust_remote_code=True))
        try:
            load_model(ModelSettings({str(untrusted)!r}, device="cpu"))
        except ModelLoadError as e:
            print("refused:", e)
        load_model(ModelSettings({str(tok_only)!r}, device="cpu"))
        print("tokenizer-only folder loaded without its code")
    """)
    # A subprocess: trusted code is copied into HF_MODULES_CACHE, which is fixed at import.
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=REPO,
                       env=cli_env(tmp_path / "cache"), timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "refused:" in r.stdout and "was not run" in r.stdout
    assert "tokenizer-only folder loaded" in r.stdout
    assert (tmp_path / "a-ran").exists()
    assert not (tmp_path / "b-ran").exists()
    assert not (tmp_path / "c-ran").exists()


def _tokenizer_code_folder(src: Path, dst: Path, marker: Path) -> Path:
    """A model whose tokenizer_config maps AutoTokenizer to a file that writes `marker`."""
    import shutil

    shutil.copytree(src, dst)
    (dst / "tokenization_marked.py").write_text(
        f"from pathlib import Path\nPath({str(marker)!r}).write_text('ran')\n"
        "from transformers import PreTrainedTokenizerFast\n\n\n"
        "class MarkedTokenizer(PreTrainedTokenizerFast):\n    pass\n", encoding="utf-8")
    config = json.loads((dst / "tokenizer_config.json").read_text())
    config["auto_map"] = {"AutoTokenizer": [None, "tokenization_marked.MarkedTokenizer"]}
    (dst / "tokenizer_config.json").write_text(json.dumps(config))
    return dst


# --------------------------------------------------------------------------- pickles


@pytest.mark.parametrize("trust", [False, True], ids=["default", "trust-remote-code"])
def test_a_pickle_that_runs_code_is_refused(tiny_llama_dir, isolated_cache, tmp_path, trust):
    # Guards: .bin checkpoints are unpickled with weights_only=True, even with
    # trust_remote_code, so a pickle carrying code is refused before the code runs.
    marker = tmp_path / "pickle-ran"
    folder = pickle_bin_folder(tiny_llama_dir, tmp_path / "pickled", marker)
    with pytest.raises(ModelLoadError, match="refused"):
        load_model(ModelSettings(str(folder), device="cpu", trust_remote_code=trust))
    assert not marker.exists()


def test_a_plain_tensor_pickle_still_loads(tiny_llama_dir, isolated_cache, tmp_path):
    # Control for the test above: weights_only=True refuses code, not ordinary .bin weights.
    folder = pickle_bin_folder(tiny_llama_dir, tmp_path / "plain", marker=None)
    loaded = load_model(ModelSettings(str(folder), device="cpu"))
    expected = load_file(tiny_llama_dir / "model.safetensors")
    state = loaded.model.state_dict()
    assert all(torch.equal(state[k], v) for k, v in expected.items())


class _Finding(ast.NodeVisitor):
    """Calls that could unpickle data from outside."""

    def __init__(self) -> None:
        self.found: list[str] = []

    def visit_Call(self, node: ast.Call) -> None:
        name = _dotted(node.func)
        kw = {k.arg: k.value for k in node.keywords}

        def const(key):
            value = kw.get(key)
            return value.value if isinstance(value, ast.Constant) else "<not a literal>"

        if name in ("torch.load",) and const("weights_only") is not True:
            self.found.append(f"line {node.lineno}: torch.load without weights_only=True")
        if name in ("np.load", "numpy.load") and const("allow_pickle") is not False:
            self.found.append(f"line {node.lineno}: {name} without allow_pickle=False")
        if name.split(".")[0] in ("pickle", "cPickle", "dill", "cloudpickle", "joblib", "shelve",
                                  "marshal") and name.split(".")[-1] in (
                                      "load", "loads", "Unpickler", "open"):
            self.found.append(f"line {node.lineno}: {name}")
        if name.endswith("read_pickle"):
            self.found.append(f"line {node.lineno}: {name}")
        self.generic_visit(node)


def _dotted(node: ast.AST) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return f"{_dotted(node.value)}.{node.attr}"
    return ""


def _unsafe_loads(source: str) -> list[str]:
    finder = _Finding()
    finder.visit(ast.parse(source))
    return finder.found


def test_the_unpickling_check_catches_what_it_should():
    # The scanner below is only as good as its patterns: check them on known-bad code.
    bad = textwrap.dedent("""
        import pickle, torch, numpy as np, pandas as pd
        torch.load(path)
        torch.load(path, weights_only=False)
        np.load(path)
        pickle.loads(data)
        pd.read_pickle(path)
    """)
    assert len(_unsafe_loads(bad)) == 5
    good = "torch.load(p, weights_only=True)\nnp.load(p, allow_pickle=False)\n"
    assert _unsafe_loads(good) == []


def test_no_source_file_unpickles_outside_data():
    # Guards: every torch.load passes weights_only=True, every np.load allow_pickle=False,
    # and nothing calls pickle/dill/joblib loaders, anywhere in the shipped code.
    files = [p for d in SOURCE_DIRS for p in sorted((REPO / d).rglob("*.py"))]
    assert len(files) > 20
    findings = {str(p.relative_to(REPO)): _unsafe_loads(p.read_text(encoding="utf-8"))
                for p in files}
    assert {f: v for f, v in findings.items() if v} == {}


# --------------------------------------------------------------------------- network


def _make_run(env_extra: dict[str, str]) -> str:
    env = {k: v for k, v in os.environ.items() if k not in ("ENTRODROP_ADDRESS", "MAKEFLAGS")}
    env.update(env_extra)
    r = subprocess.run(["make", "-n", "run"], capture_output=True, text=True, cwd=REPO, env=env,
                       timeout=60)
    assert r.returncode == 0, r.stderr
    return r.stdout


def test_the_app_listens_on_localhost_by_default():
    # Guards: `make run` (the documented way to start the app) binds 127.0.0.1 unless
    # ENTRODROP_ADDRESS asks otherwise; only the Dockerfile sets 0.0.0.0, for a container.
    default = _make_run({})
    assert "--server.address 127.0.0.1 " in default
    assert "--server.address 0.0.0.0 " in _make_run({"ENTRODROP_ADDRESS": "0.0.0.0"})
    # No Streamlit config in the repository overrides the address behind make's back.
    configs = [p for p in REPO.rglob(".streamlit/config.toml") if ".venv" not in p.parts]
    for config in configs:
        assert "0.0.0.0" not in config.read_text(), config


def test_the_attn_model_card_loads_without_any_prompt(tmp_path):
    # Guards: the README's snippet loaded the tokenizer without trust_remote_code, so
    # transformers (seeing the config's auto_map) asked on the terminal whether to run the
    # export's code; only the model needs it, and the snippet now says so for both.
    import re

    from pruning.export import export_pruned
    from tests.tiny_models import tiny_model, tiny_tokenizer

    out = tmp_path / "attn-export"
    export_pruned(tiny_model("llama"), tiny_tokenizer(), out, granularity="attn", blocks=[1],
                  manifest={})
    readme = (out / "README.md").read_text()
    snippet = re.search(r"```python\n(.*?)```", readme, re.S).group(1)
    assert 'AutoTokenizer.from_pretrained("attn-export", trust_remote_code=False)' in snippet
    guard = ("import builtins\n"
             "def _no_prompt(*a):\n"
             "    raise SystemExit('prompted: ' + ' '.join(map(str, a)))\n"
             "builtins.input = _no_prompt\n")
    code = guard + snippet + "\nprint(type(model).__name__, tokenizer('the law')['input_ids'])\n"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "HF_MODULES_CACHE": str(tmp_path / "modules")}
    r = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True,
                       env=env, stdin=subprocess.DEVNULL, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "prompted" not in r.stderr and "EntroDropLlamaForCausalLM" in r.stdout, r.stdout
