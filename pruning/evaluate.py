"""What pruning costs in quality and what it saves in speed.

A *variant* is any zero-argument factory of a context manager that changes the model in
place while it is entered and restores it on exit, for example
`lambda: pruned(model, "attn", [5, 7])` or `lambda: width_pruned(model, keep)`. Every
function here takes variants in that form, so block and width pruning share them.

Quality is measured against the unpruned model on held-out windows: perplexity of the true
next token, KL(P_unpruned || P_variant) and top-1 agreement with the unpruned argmax.
Speed is measured with the base and the pruned model side by side, in interleaved repeats.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import asdict, dataclass
from typing import Literal, TypeVar

import torch
from torch import nn

from analysis.errors import EntroDropError

Variant = Callable[[], AbstractContextManager]
"""A zero-argument factory of a context manager that modifies the model while entered."""

UNPRUNED = "unpruned"
VariantT = TypeVar("VariantT")


class EvaluationError(EntroDropError):
    """Bad input to an evaluation; the message says what was wrong and what to do."""


# ---------------------------------------------------------------------------- quality


class JsonRecord:
    """A result dataclass whose `to_dict` is plain JSON: non-finite figures become None.
    Quality and speed records are both read by the manifest, the CLI and the app."""

    def to_dict(self) -> dict:
        return json_safe(asdict(self))


@dataclass(frozen=True)
class Quality(JsonRecord):
    """Quality of one variant against the unpruned model, on held-out windows."""

    perplexity: float
    """exp(mean NLL of the true next token)."""
    kl: float
    """Mean over tokens of KL(P_unpruned || P_variant), in nats."""
    top1: float
    """Fraction of tokens where the variant's argmax equals the unpruned argmax."""
    tokens: int
    """Predicted positions counted: N * (T - 1)."""


@dataclass
class QualitySums:
    """Running sums over predicted tokens, so memory does not depend on N."""

    nll: float = 0.0
    kl: float = 0.0
    agree: int = 0
    tokens: int = 0

    def add(self, nll: torch.Tensor, kl: torch.Tensor, agree: torch.Tensor) -> None:
        self.nll += float(nll.double().sum())
        self.kl += float(kl.double().sum())
        self.agree += int(agree.sum())
        self.tokens += nll.numel()

    def result(self) -> Quality:
        mean_nll = self.nll / self.tokens
        ppl = math.exp(mean_nll) if mean_nll < 709.0 else math.inf
        return Quality(ppl, self.kl / self.tokens, self.agree / self.tokens, self.tokens)


def next_token_log_probs(logits: torch.Tensor) -> torch.Tensor:
    """log softmax of the logits that predict positions 1..T-1, in float32.

    logits: [B, T, V] -> [B, T-1, V]; row t is log P(x_{t+1} | x_0..x_t).
    """
    return torch.log_softmax(logits[:, :-1].float(), dim=-1)


def token_kl(log_p: torch.Tensor, log_q: torch.Tensor) -> torch.Tensor:
    """KL(P || Q) per token: sum_v P_v (log P_v - log Q_v).

    log_p, log_q: [..., V] log-probabilities -> [...]. Terms with P_v = 0 count as 0
    (also where log P_v = -inf, which the plain formula would turn into NaN).
    """
    p = log_p.exp()
    terms = torch.where(p > 0, p * (log_p - log_q), torch.zeros_like(p))
    return terms.sum(dim=-1)


def evaluate_quality(
    model: nn.Module,
    input_ids: torch.Tensor,
    variants: Mapping[str, Variant],
    *,
    batch_size: int = 4,
    progress: Callable[[int, int], None] | None = None,
) -> dict[str, Quality]:
    """Perplexity, KL to the unpruned model and top-1 agreement of every variant.

    input_ids: [N, T] held-out windows (no padding). For each batch the unpruned model runs
    once; its next-token log-probabilities are the reference for every variant, which is
    entered, run and exited in turn. Only running sums cross batches, so memory holds at
    most one batch of reference log-probs and one of variant logits ([B, T, V] each),
    whatever N is. The result has the key "unpruned" (KL 0, top-1 1) plus one per variant.
    `progress(done, total)` is called after each batch.
    """
    ids = checked_input_ids(model, input_ids)
    positive_int("batch_size", batch_size)
    for name, factory in variants.items():
        if name == UNPRUNED:
            raise EvaluationError(
                f"variant name {UNPRUNED!r} is reserved for the reference model; rename it"
            )
        if not callable(factory):
            raise EvaluationError(
                f"variant {name!r} must be a zero-argument callable returning a context "
                f"manager (e.g. lambda: pruned(model, 'attn', [3])); got {type(factory).__name__}"
            )

    device = model_device(model)
    sums = {name: QualitySums() for name in (UNPRUNED, *variants)}
    total = math.ceil(ids.shape[0] / batch_size)
    with torch.inference_mode(), eval_mode(model):
        for done, start in enumerate(range(0, ids.shape[0], batch_size), start=1):
            batch = ids[start:start + batch_size].to(device)
            targets = batch[:, 1:].unsqueeze(-1)
            ref = next_token_log_probs(_logits(model, batch))
            ref_top = ref.argmax(dim=-1)
            ref_nll = -ref.gather(-1, targets).squeeze(-1)
            sums[UNPRUNED].add(ref_nll, torch.zeros_like(ref_nll), torch.ones_like(ref_top))
            for name, factory in variants.items():
                with factory():
                    logits = _logits(model, batch)
                out = next_token_log_probs(logits)
                del logits
                sums[name].add(
                    -out.gather(-1, targets).squeeze(-1),
                    token_kl(ref, out),
                    out.argmax(dim=-1) == ref_top,
                )
                del out
            del ref
            if progress is not None:
                progress(done, total)
    return {name: s.result() for name, s in sums.items()}


def quality_curves(
    model: nn.Module,
    input_ids: torch.Tensor,
    granularity: Literal["layer", "attn"],
    orders: Mapping[str, Orders],
    ks: Sequence[int],
    **kw,
) -> list[dict]:
    """Quality after pruning the first K blocks of each criterion's order (or its prune
    set at K, for a criterion given as {K: blocks}), for every K.

    Returns rows {criterion, k, perplexity, kl, top1}, grouped by criterion in the order
    given, K ascending; every criterion gets a K = 0 row (the unpruned figures). All
    variants go through one `evaluate_quality` call (extra keywords go to it), so the
    reference runs once per batch; criteria that prune the same set at some K share it.
    """
    from pruning.apply import pruned  # written alongside; imported late to keep this light

    def variant(blocks: list[int]) -> Variant:
        # A function (not a lambda in the loop) so each variant keeps its own blocks.
        return lambda: pruned(model, granularity, blocks)

    variants, plan = plan_curves(granularity, orders, ks, variant)
    return curve_rows(plan, evaluate_quality(model, input_ids, variants, **kw))


Orders = Sequence[int] | Mapping[int, Sequence[int]]
"""A criterion's pruning order (the set at K is its first K blocks), or its prune set at
each K ({K: blocks}) for criteria whose sets are not nested (angular_span)."""
CurvePlan = list[tuple[str, int, str]]
"""(criterion, K, name of the variant giving its figures), one per row of the curves."""


def plan_curves(granularity: str, orders: Mapping[str, Orders], ks: Sequence[int],
                variant: Callable[[list[int]], VariantT]) -> tuple[dict[str, VariantT], CurvePlan]:
    """The variants `quality_curves` evaluates, {name: variant(first K blocks of an order)},
    one per distinct pruned set, and its rows; K = 0 rows read the reference."""
    if granularity not in ("layer", "attn"):
        raise EvaluationError(f"granularity must be 'layer' or 'attn'; got {granularity!r}")
    if not orders:
        raise EvaluationError("orders is empty: give at least one criterion's pruning order")
    k_values = sorted({0, *(_check_k(k) for k in ks)})

    variants: dict[str, VariantT] = {}
    plan: CurvePlan = []
    for criterion, order in orders.items():
        sets = order if isinstance(order, Mapping) else None
        order = [] if sets is not None else [operator.index(b) for b in order]
        for k in k_values:
            if sets is not None and k not in sets and k != 0:
                raise EvaluationError(
                    f"{criterion!r} has no prune set for K={k} (it decides K in "
                    f"{sorted(sets)}); lower K")
            if sets is None and k > len(order):
                raise EvaluationError(
                    f"K={k} is larger than the {len(order)} blocks in the order of "
                    f"{criterion!r}; lower K or rank more blocks"
                )
            if k == 0:
                plan.append((criterion, 0, UNPRUNED))
                continue
            blocks = ([operator.index(b) for b in sets[k]] if sets is not None else order[:k])
            name = f"{granularity}:{','.join(map(str, sorted(blocks)))}"
            variants.setdefault(name, variant(blocks))
            plan.append((criterion, k, name))
    return variants, plan


def curve_rows(plan: CurvePlan, results: Mapping[str, Quality]) -> list[dict]:
    """The rows of `quality_curves`, JSON-safe, from the figures of every planned variant."""
    rows = []
    for criterion, k, name in plan:
        q = results[name]
        rows.append({"criterion": criterion, "k": k, "perplexity": q.perplexity,
                     "kl": q.kl, "top1": q.top1})
    return [json_safe(r) for r in rows]


# ---------------------------------------------------------------------------- helpers


def model_device(model: nn.Module) -> torch.device:
    """Where the model's inputs go: the device of its input embeddings."""
    try:
        return model.get_input_embeddings().weight.device
    except (AttributeError, NotImplementedError):
        return next(model.parameters()).device


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[None]:
    # Dropout would make the unpruned model disagree with itself.
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


def _logits(model: nn.Module, ids: torch.Tensor) -> torch.Tensor:
    return model(input_ids=ids, use_cache=False).logits


def checked_input_ids(model: nn.Module, input_ids) -> torch.Tensor:
    """Held-out windows [N, T] as a LongTensor, refused unless they fit this model."""
    if not isinstance(input_ids, torch.Tensor) or input_ids.dim() != 2:
        shape = tuple(input_ids.shape) if isinstance(input_ids, torch.Tensor) else type(input_ids).__name__
        raise EvaluationError(f"input_ids must be a [N, T] tensor of token ids; got {shape}")
    if input_ids.dtype.is_floating_point or input_ids.dtype == torch.bool:
        raise EvaluationError(f"input_ids must hold integer token ids; got dtype {input_ids.dtype}")
    n, t = input_ids.shape
    if n < 1 or t < 2:
        raise EvaluationError(
            f"input_ids has shape {(n, t)}; need N >= 1 windows of T >= 2 tokens"
        )
    vocab = model_vocab_size(model)
    lo, hi = int(input_ids.min()), int(input_ids.max())
    if lo < 0 or (vocab is not None and hi >= vocab):
        raise EvaluationError(
            f"input_ids range from {lo} to {hi} but the model's vocabulary has {vocab} ids; "
            "tokenize with this model's tokenizer"
        )
    return input_ids.long()


def _check_k(k) -> int:
    try:
        value = operator.index(k)  # accepts numpy integers, rejects floats and strings
    except TypeError:
        value = -1
    if isinstance(k, bool) or value < 0:
        raise EvaluationError(f"every K must be an integer >= 0; got {k!r}")
    return value


def positive_int(name: str, value) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise EvaluationError(f"{name} must be an integer >= 1; got {value!r}")


def model_vocab_size(model: nn.Module) -> int | None:
    try:
        return int(model.get_input_embeddings().num_embeddings)
    except (AttributeError, NotImplementedError):
        return getattr(getattr(model, "config", None), "vocab_size", None)


def model_max_positions(model: nn.Module) -> int | None:
    config = getattr(model, "config", None)
    if config is None:
        return None
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    for key in ("max_position_embeddings", "n_positions"):
        value = getattr(text, key, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


def json_safe(d: dict) -> dict:
    """Non-finite floats become None: JSON has no inf or NaN."""
    return {k: (None if isinstance(v, float) and not math.isfinite(v) else v)
            for k, v in d.items()}
