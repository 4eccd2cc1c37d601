"""Check: attention-pruned exports in the vLLM layout run in vLLM and match transformers.

Run: `make vllm-check`, or, once `bash scripts/setup_vllm.sh` has made .venv-vllm:
    .venv/bin/python bench/vllm_check.py [--model demo:smollm2-135m] [--k 4]

1. Loads the model (CPU, float32) through the service, analyses it (the profiles cache
   serves a repeated run) and takes the default criterion's attn choice at K.
2. Exports, in the vLLM layout: that choice (through `service.export_blocks`, as the CLI
   does); K blocks that include block 0 (kept with a zero output projection); and K=0 as a
   control (vLLM's DeciLM path with nothing pruned, for the engines' own float32 gap).
3. For each export: the in-memory pruned model's log-probabilities of the prompt tokens
   and its greedy continuation (transformers), the exported folder reloaded in transformers
   (trust_remote_code) against it, and vLLM on the folder (bench/vllm_run.py in .venv-vllm,
   float32, greedy, prompt logprobs).
4. Prints max |logprob difference| over every prompt position and every generated token
   (while the two continuations agree), and whether the greedy token ids and text are
   identical. Exit status 0 when every export is within the tolerances, 1 when one is not,
   2 when .venv-vllm is missing. `--json PATH` also writes the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

VLLM_PYTHON = ROOT / ".venv-vllm" / "bin" / "python"
RUNNER = ROOT / "bench" / "vllm_run.py"


def reference(model, prompts, new_tokens: int) -> list[dict]:
    """Transformers' log-probabilities of each prompt token after the first, and the greedy
    continuation with each generated token's log-probability.

    The greedy loop is written out (full forward per step, no logits processors), which is
    what vLLM does with temperature 0 and ignore_eos: `generate` would mask EOS out under
    min_new_tokens and shift every log-probability by log(1 - p(EOS))."""
    import torch

    out = []
    with torch.no_grad():
        for ids in prompts:
            x = torch.tensor([ids])
            logprobs = torch.log_softmax(model(input_ids=x, use_cache=False).logits[0].float(), -1)
            prompt_lp = logprobs[:-1].gather(1, x[0, 1:, None])[:, 0].tolist()
            tokens, gen_lp = [], []
            for _ in range(new_tokens):
                last = logprobs[-1]
                token = int(last.argmax())
                tokens.append(token)
                gen_lp.append(last[token].item())
                x = torch.cat([x, torch.tensor([[token]])], dim=1)
                logprobs = torch.log_softmax(model(input_ids=x, use_cache=False).logits[0].float(), -1)
            out.append({"prompt_logprobs": prompt_lp, "generated": tokens,
                        "generated_logprobs": gen_lp})
    return out


def reload_gap(folder: Path, model, prompts) -> float:
    """Max |logit difference| between the exported folder reloaded in transformers and the
    in-memory pruned `model`."""
    import torch
    from transformers import AutoModelForCausalLM

    reloaded = AutoModelForCausalLM.from_pretrained(folder, trust_remote_code=True,
                                                    dtype=torch.float32).eval()
    gap = 0.0
    with torch.no_grad():
        for ids in prompts:
            x = torch.tensor([ids])
            a, b = reloaded(input_ids=x, use_cache=False).logits, model(input_ids=x, use_cache=False).logits
            gap = max(gap, (a - b).abs().max().item())
    return gap


def run_vllm(folder: Path, prompts, new_tokens: int, work: Path, timeout: int) -> dict:
    request, result = work / f"{folder.name}.request.json", work / f"{folder.name}.result.json"
    request.write_text(json.dumps({"prompts": prompts, "new_tokens": new_tokens}))
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "VLLM_CPU_KVCACHE_SPACE": os.environ.get("VLLM_CPU_KVCACHE_SPACE", "1")}
    env.pop("PYTHONPATH", None)  # vLLM's environment never sees the project
    log = work / f"{folder.name}.vllm.log"
    with open(log, "w") as f:
        proc = subprocess.run([str(VLLM_PYTHON), str(RUNNER), str(folder), str(request),
                               str(result)], env=env, stdout=f, stderr=subprocess.STDOUT,
                              timeout=timeout, cwd=work)
    if proc.returncode != 0:
        tail = log.read_text(errors="replace").strip().splitlines()[-15:]
        raise RuntimeError(f"vLLM failed on {folder} (exit {proc.returncode}); log {log}:\n"
                           + "\n".join(tail))
    return json.loads(result.read_text())


def compare(ref: list[dict], got: list[dict], tokenizer) -> dict:
    prompt_gap, gen_gap, same_ids, same_text = 0.0, 0.0, True, True
    for r, g in zip(ref, got, strict=True):
        prompt_gap = max(prompt_gap, max(abs(a - b) for a, b in
                                         zip(r["prompt_logprobs"], g["prompt_logprobs"], strict=True)))
        for a, b, ta, tb in zip(r["generated_logprobs"], g["generated_logprobs"], r["generated"],
                                g["generated"], strict=True):
            if ta != tb:
                break
            gen_gap = max(gen_gap, abs(a - b))
        same_ids &= r["generated"] == g["generated"]
        same_text &= tokenizer.decode(r["generated"]) == g["text"]
    return {"max_prompt_logprob_diff": prompt_gap, "max_generated_logprob_diff": gen_gap,
            "greedy_ids_identical": same_ids, "greedy_text_identical": same_text}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="demo:smollm2-135m")
    p.add_argument("--k", type=int, default=4, help="attention sub-blocks to prune")
    p.add_argument("--prompts", type=int, default=3, help="held-out windows used as prompts")
    p.add_argument("--prompt-len", type=int, default=64, help="tokens per prompt")
    p.add_argument("--new-tokens", type=int, default=16, help="greedy tokens to generate")
    p.add_argument("--tolerance", type=float, default=1e-3,
                   help="largest |logprob difference| accepted (float32 on both sides)")
    p.add_argument("--no-control", action="store_true", help="skip the K=0 control export")
    p.add_argument("--timeout", type=int, default=1200, help="seconds per vLLM run")
    p.add_argument("--keep", default=None, help="write the exports here and keep them")
    p.add_argument("--json", default=None, help="also write the figures to this file")
    a = p.parse_args(argv)
    if not VLLM_PYTHON.is_file():
        print(f"error: {VLLM_PYTHON} not found; run `bash scripts/setup_vllm.sh` (or "
              "`make vllm-setup`) first", file=sys.stderr)
        return 2

    from analysis.settings import CalibrationSettings, EstimatorSettings, ModelSettings
    from entrodrop import service
    from pruning.apply import pruned
    from pruning.export import export_pruned

    settings = ModelSettings(a.model, device="cpu", dtype="float32", load="memory")
    loaded = service.load(settings)
    cal = CalibrationSettings()
    profile = service.analyze(service.analysis_request(settings, [cal], EstimatorSettings()),
                              loaded=loaded).runs[0]
    chosen = service.decision(profile, "attn", "knn", a.k, service.stage_plan(profile))
    with_zero = [0, *[b for b in chosen.order if b != 0][:a.k - 1]]
    windows = service.held_out_windows(CalibrationSettings(cal.spec, seqlen=a.prompt_len),
                                       loaded, a.prompts)
    prompts = [row.tolist() for row in windows]

    work = Path(a.keep) if a.keep else Path(tempfile.mkdtemp(prefix="vllm-check-"))
    work.mkdir(parents=True, exist_ok=True)
    cases = {f"attn-k{a.k}-knn": sorted(chosen.blocks),
             f"attn-k{a.k}-with-block0": sorted(with_zero)}
    if not a.no_control:
        cases["attn-k0-control"] = []
    rows, ok = [], True
    for name, blocks in cases.items():
        folder = work / name
        t0 = time.perf_counter()
        if name.endswith("-knn"):
            service.export_blocks(loaded, profile, chosen, folder, overwrite=True, layout="vllm")
        else:
            export_pruned(loaded.model, loaded.tokenizer, folder, granularity="attn",
                          blocks=blocks, manifest={"source_model": a.model}, overwrite=True,
                          layout="vllm")
        export_s = time.perf_counter() - t0
        with pruned(loaded.model, "attn", blocks):
            ref = reference(loaded.model, prompts, a.new_tokens)
            gap = reload_gap(folder, loaded.model, prompts)
        got = run_vllm(folder, prompts, a.new_tokens, work, a.timeout)
        row = {"case": name, "blocks": blocks, "transformers_reload_max_logit_diff": gap,
               **compare(ref, got["results"], loaded.tokenizer), "export_s": export_s,
               "vllm_load_s": got["load_s"], "vllm_generate_s": got["generate_s"],
               "vllm_version": got["vllm_version"]}
        row["pass"] = (row["max_prompt_logprob_diff"] <= a.tolerance
                       and row["max_generated_logprob_diff"] <= a.tolerance
                       and row["greedy_ids_identical"] and row["greedy_text_identical"]
                       and gap <= 1e-5)
        ok &= row["pass"]
        rows.append(row)
        print(f"{name:24} blocks {blocks}: prompt |dlogp| {row['max_prompt_logprob_diff']:.2e}, "
              f"generated |dlogp| {row['max_generated_logprob_diff']:.2e}, greedy ids "
              f"{'same' if row['greedy_ids_identical'] else 'DIFFER'}, text "
              f"{'same' if row['greedy_text_identical'] else 'DIFFERS'}, transformers reload "
              f"|dlogit| {gap:.1e} -> {'ok' if row['pass'] else 'FAIL'}", flush=True)
    summary = {"model": a.model, "k": a.k, "prompts": a.prompts, "prompt_len": a.prompt_len,
               "new_tokens": a.new_tokens, "tolerance": a.tolerance, "cases": rows, "pass": ok}
    if a.json:
        Path(a.json).write_text(json.dumps(summary, indent=2) + "\n")
    print("PASS" if ok else "FAIL: outside the tolerances (see above)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
