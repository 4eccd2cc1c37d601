"""Teaching text: the start page's steps and the demo, and what a curve means in plain words.

Plain data and functions of typed results, so the wording is tested without a browser.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from analysis.profile import Profile
from analysis.settings import DEFAULT_CALIBRATION, DEFAULT_MODEL
from pruning.stages import StagePlan


@dataclass(frozen=True)
class Step:
    title: str
    page: str
    """The page file under app/, as st.page_link takes it."""
    text: str


STEPS: tuple[Step, ...] = (
    Step("Model", "views/model.py",
         "Pick a causal language model: a bundled demo, a local folder or GGUF file, or a "
         "hub id."),
    Step("Calibration", "views/calibration.py",
         "Choose the text the model reads and run the analysis: it measures the entropy "
         "of the hidden states after every layer."),
    Step("Entropy dynamics", "views/dynamics.py",
         "See where entropy falls (Stage 1, never pruned) and where it rises (Stage 2); "
         "move the S_start boundary between them."),
    Step("Prune list", "views/prune_list.py",
         "Rank the Stage-2 blocks by how little entropy they add, next to the cosine "
         "baseline, and choose K, the number of blocks to remove."),
    Step("Budget", "views/budget.py",
         "Measure what removing K blocks costs (perplexity, agreement with the full model) "
         "and what it saves (parameters, speed), and read both models' text side by side."),
    Step("Export", "views/export.py",
         "Write the pruned model: a checkpoint for transformers (or vLLM), or a GGUF file "
         "for llama.cpp."),
)

DEMO_MODEL = DEFAULT_MODEL
DEMO_SOURCE = DEFAULT_CALIBRATION
DEMO_SAMPLES = 16
DEMO_SEQLEN = 128


def demo_description() -> str:
    return (f"Loads `{DEMO_MODEL}` (bundled, offline), analyses {DEMO_SAMPLES} windows of "
            f"{DEMO_SEQLEN} tokens from `{DEMO_SOURCE}` (text already on this machine) and "
            "opens the entropy dynamics. The first run converts the model once (about 40 s).")


def curve_notes(profile: Profile, plan: StagePlan, plotted: Sequence[str]) -> list[str]:
    """Plain-words notes for the entropy curve beside it: a Stage 1 of one layer or none,
    and a knn curve with no dip (its embedding point already at the floor)."""
    notes = []
    if plan.policy == "auto" and plan.s_start <= 1:
        stage1 = ("no layer at all" if plan.s_start == 0 else "only layer 0")
        notes.append(
            f"**Why S_start is {plan.s_start}.** The automatic rule puts the boundary where "
            f"the curve is lowest in the first half of the model, and here that is Z_"
            f"{plan.s_start}, right after the embedding. So Stage 1, the part that squeezes "
            f"the input together and is never pruned, is {stage1}: this model does its "
            "compressing at once, and from there on every layer spreads the representation "
            "out again. Every later block is a candidate for pruning (the last one stays "
            "unless you allow it).")
    if "knn" in plotted and profile.s_start.get("knn") == 0:
        notes.append(
            "**Why the knn curve has no dip.** Its first point, Z_0, is the embedding "
            "output, and there every copy of the same token (every 'the', every space) is "
            "exactly the same vector. The knn estimator judges spread by how far each token "
            "is from its nearest neighbours; identical copies are at distance zero, so it "
            "reads the embeddings as having almost no spread and puts Z_0 at its floor. "
            "After the first layer each copy has mixed in its own context, the copies "
            "differ, and the estimate jumps up. So the knn curve starts at its lowest point "
            "and never dips; that is why the automatic S_start reads the bucket curve by "
            "default.")
    return notes
