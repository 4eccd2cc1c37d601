"""Run one exported folder in vLLM (CPU build, float32, greedy) and write what it computed.

This runs inside .venv-vllm (scripts/setup_vllm.sh), never in the project's .venv: it
imports vLLM only, not the project. bench/vllm_check.py starts it once per export:

    .venv-vllm/bin/python bench/vllm_run.py FOLDER REQUEST.json RESULT.json

REQUEST.json: {"prompts": [[token ids], ...], "new_tokens": N}. RESULT.json, per prompt:
the log-probability vLLM gives each prompt token after the first (`prompt_logprobs`), the
greedy continuation's token ids and text, and each generated token's log-probability; plus
the load and run times.
"""

from __future__ import annotations

import json
import sys
import time


def main(folder: str, request_path: str, result_path: str) -> int:
    from vllm import LLM, SamplingParams
    from vllm.inputs import TokensPrompt

    request = json.loads(open(request_path, encoding="utf-8").read())
    started = time.perf_counter()
    # Eager: no compilation (minutes on a small CPU, and not what is being checked here).
    # trust_remote_code: vLLM takes the export's config class (block_configs) from it.
    llm = LLM(model=folder, dtype="float32", trust_remote_code=True, enforce_eager=True,
              max_model_len=1024, seed=0)
    loaded = time.perf_counter()
    params = SamplingParams(temperature=0.0, max_tokens=request["new_tokens"],
                            prompt_logprobs=0, logprobs=0, ignore_eos=True)
    outputs = llm.generate([TokensPrompt(prompt_token_ids=ids) for ids in request["prompts"]],
                           params)
    done = time.perf_counter()
    results = []
    for ids, out in zip(request["prompts"], outputs, strict=True):
        # prompt_logprobs[0] is None (nothing predicts the first token); each later entry
        # holds at least the logprob of the prompt's own token at that position.
        prompt_lp = [entry[tok].logprob for tok, entry in zip(ids[1:], out.prompt_logprobs[1:],
                                                                  strict=True)]
        gen = out.outputs[0]
        results.append({
            "prompt_logprobs": prompt_lp,
            "generated": list(gen.token_ids),
            "generated_logprobs": [lp[tok].logprob for tok, lp in zip(gen.token_ids, gen.logprobs,
                                                                      strict=True)],
            "text": gen.text,
        })
    import vllm

    with open(result_path, "w", encoding="utf-8") as f:
        json.dump({"vllm_version": vllm.__version__, "load_s": loaded - started,
                   "generate_s": done - loaded, "results": results}, f)
    return 0


if __name__ == "__main__":
    if len(sys.argv) != 4:
        print("usage: vllm_run.py FOLDER REQUEST.json RESULT.json", file=sys.stderr)
        sys.exit(2)
    sys.exit(main(*sys.argv[1:]))
