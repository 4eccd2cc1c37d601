"""A multiple-choice lm-eval task over local data the tests make, and the same task scored
directly from the model's log-likelihoods (the reference the harness must agree with)."""

from __future__ import annotations

import json
import random
from pathlib import Path

import torch

TASK = "entrodrop_local_mc"
WORDS = ("the of and to in is was for on that with as by at from law court shall state any "
         "person right may under act license software work copy model layer block entropy "
         "token data code file text use other").split()


def make_docs(n: int = 12, seed: int = 0) -> list[dict]:
    """Questions with three distinct answers each; the gold index varies."""
    rng = random.Random(seed)
    docs = []
    for _ in range(n):
        question = " ".join(rng.choice(WORDS) for _ in range(rng.randint(4, 8)))
        choices: list[str] = []
        while len(choices) < 3:
            choice = " ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 4)))
            if choice not in choices:
                choices.append(choice)
        docs.append({"question": question, "choices": choices, "label": rng.randint(0, 2)})
    return docs


def write_task(folder: Path, docs: list[dict], name: str = TASK) -> Path:
    """A task directory: `docs.jsonl` and a YAML task over it (json loader, local file)."""
    folder.mkdir(parents=True, exist_ok=True)
    data = folder / "docs.jsonl"
    data.write_text("".join(json.dumps(d) + "\n" for d in docs), encoding="utf-8")
    (folder / f"{name}.yaml").write_text(
        f"task: {name}\n"
        "dataset_path: json\n"
        "dataset_kwargs:\n"
        "  data_files:\n"
        f"    validation: {data}\n"
        "validation_split: validation\n"
        "output_type: multiple_choice\n"
        'doc_to_text: "{{question}}"\n'
        'doc_to_choice: "{{choices}}"\n'
        'doc_to_target: "{{label}}"\n'
        "metric_list:\n"
        "  - metric: acc\n"
        "    aggregation: mean\n"
        "    higher_is_better: true\n"
        "  - metric: acc_norm\n"
        "    aggregation: mean\n"
        "    higher_is_better: true\n"
        "metadata:\n"
        "  version: 2.0\n", encoding="utf-8")
    return folder


def choice_loglikelihoods(model, tokenizer, question: str, choices: list[str]) -> list[float]:
    """Sum of log P(continuation tokens | question) for each " " + choice, one unbatched
    forward pass per choice: the continuation is what the full string's tokens add beyond
    the question's own tokens."""
    out = []
    context = tokenizer.encode(question)
    for choice in choices:
        whole = tokenizer.encode(question + " " + choice)
        assert whole[:len(context)] == context
        ids = torch.tensor([whole], device=model.device)
        with torch.no_grad():
            logits = model(input_ids=ids, use_cache=False).logits[0].float()
        logp = torch.log_softmax(logits, dim=-1)
        out.append(sum(float(logp[pos - 1, whole[pos]]) for pos in range(len(context), len(whole))))
    return out


def direct_accuracy(model, tokenizer, docs: list[dict]) -> dict:
    """acc (largest log-likelihood is the gold answer) and acc_norm (the same after dividing
    by the answer's length in characters), first choice on ties, with every log-likelihood."""
    acc, acc_norm, lls = [], [], []
    for d in docs:
        ll = choice_loglikelihoods(model, tokenizer, d["question"], d["choices"])
        norm = [v / len(c) for v, c in zip(ll, d["choices"], strict=True)]
        acc.append(float(max(range(3), key=lambda i: (ll[i], -i)) == d["label"]))
        acc_norm.append(float(max(range(3), key=lambda i: (norm[i], -i)) == d["label"]))
        lls.append(ll)
    return {"acc": sum(acc) / len(acc), "acc_norm": sum(acc_norm) / len(acc_norm), "lls": lls}
