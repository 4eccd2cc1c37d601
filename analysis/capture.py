"""One forward pass, every block: streaming entropy statistics from scoped hooks.

Points on the residual stream, for a model with L decoder layers:
- Z_j, j = 0..L: Z_0 enters layer 0, Z_{j+1} leaves layer j (no final norm).
- A_i, i = 0..L-1: the residual right after layer i's attention sub-block is added back.

Block i at granularity `layer` maps X = Z_i to Y = Z_{i+1}; at `attn` it maps Z_i to A_i.
A span of n layers l..l+n-1 maps Z_l to Z_{l+n}; its angular distance is accumulated for
every span of up to `span_count(L)` layers (ANGULAR_MAX_SPAN).
Each point's entropy is computed once, on the model's device, as the batch passes; only
sums and counts are kept, so memory does not grow with the number of samples.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn

from analysis import estimators
from analysis.architectures import get_architecture
from analysis.settings import ESTIMATORS, EstimatorSettings

Progress = Callable[[float, str], None]

ANGULAR_MAX_SPAN = 16
"""Longest span n (in layers) whose angular distance d(Z_l, Z_{l+n}) a profile holds. All
spans cost little in memory, but layer streaming must keep the last n-1 layers' hidden
states of the whole calibration set to pair them, so n is bounded. Changing it changes
profiles: bump analysis.profile.SCHEMA_VERSION with it."""


def span_count(num_layers: int) -> int:
    """S, the number of span lengths n = 1..S a profile of an L-layer model holds."""
    return min(ANGULAR_MAX_SPAN, num_layers)


@dataclass
class Accumulator:
    """Mergeable sums over samples. Index 0 of `e` is the estimator (bucket, knn, renyi)."""

    z_entropy: torch.Tensor  # [E, L+1] sum over samples of H(Z_j)
    attn_entropy: torch.Tensor  # [E, L] sum over samples of H(A_i)
    layer_cosine: torch.Tensor  # [L] sum over samples of 1 - mean_t cos(Z_i, Z_{i+1})
    attn_cosine: torch.Tensor  # [L] sum over samples of 1 - mean_t cos(Z_i, A_i)
    attn_angular: torch.Tensor  # [L] sum over samples of mean_t arccos(cos(Z_i, A_i)) / pi
    span_angular: torch.Tensor  # [S, L] [n-1, l]: sum of the same for (Z_l, Z_{l+n}), l <= L-n
    z_nonfinite: torch.Tensor  # [L+1] count of non-finite entries
    attn_nonfinite: torch.Tensor  # [L]
    sink_max_norm: torch.Tensor  # [L+1, T] max over samples of ||Z_j[t]|| (all positions)
    samples: torch.Tensor  # [] number of samples

    @classmethod
    def zeros(cls, num_layers: int, seqlen: int, device: torch.device | str = "cpu") -> Accumulator:
        e, L = len(ESTIMATORS), num_layers
        f = dict(dtype=torch.float64, device=device)
        return cls(
            torch.zeros(e, L + 1, **f), torch.zeros(e, L, **f), torch.zeros(L, **f),
            torch.zeros(L, **f), torch.zeros(L, **f), torch.zeros(span_count(L), L, **f),
            torch.zeros(L + 1, **f), torch.zeros(L, **f),
            torch.zeros(L + 1, seqlen, **f), torch.zeros((), **f),
        )

    def _sum_fields(self) -> tuple[str, ...]:
        return ("z_entropy", "attn_entropy", "layer_cosine", "attn_cosine", "attn_angular",
                "span_angular", "z_nonfinite", "attn_nonfinite", "samples")

    def merge(self, other: Accumulator) -> Accumulator:
        """Combine two shards' statistics (sums add, maxima take the max)."""
        out = {name: getattr(self, name) + getattr(other, name).to(getattr(self, name).device)
               for name in self._sum_fields()}
        out["sink_max_norm"] = torch.maximum(self.sink_max_norm, other.sink_max_norm.to(self.sink_max_norm.device))
        return Accumulator(**out)

    def all_reduce(self) -> None:
        """Sum (and max) the statistics across torch.distributed ranks, in place."""
        import torch.distributed as dist

        for name in self._sum_fields():
            dist.all_reduce(getattr(self, name), op=dist.ReduceOp.SUM)
        dist.all_reduce(self.sink_max_norm, op=dist.ReduceOp.MAX)

    def to(self, device) -> Accumulator:
        return Accumulator(**{k: v.to(device) for k, v in vars(self).items()})


class BlockStats:
    """Hook callbacks that collect one batch's points, then turn them into accumulator updates.

    The points of a batch are kept (by reference; on one device Z_i and layer i's input are
    the same tensor) until the forward pass ends. Then the estimators run over groups of
    points stacked along the sample axis: on a GPU, large groups turn thousands of small
    kernel launches into a few large ones (on an H100 this took the analysis from 7.9x to
    about 1.5x a bare forward pass of the demo-sized model); on a CPU, small groups keep
    each estimator's repeated passes inside the cache. Memory is bounded by one batch,
    never by N.
    """

    # Upper bound on the float32 working set of one stacked estimator call. On a CPU a few
    # MiB keep the stack in cache: on the demo model 4-12 MiB measured 20-30% faster than
    # one 70 MiB stack per batch, and 8-12 MiB the fastest.
    chunk_bytes = 512 * 2**20
    cpu_chunk_bytes = 8 * 2**20

    def __init__(self, acc: Accumulator, opts: EstimatorSettings):
        self.acc = acc
        self.opts = opts
        self.inputs: dict[int, torch.Tensor] = {}
        self.z: dict[int, torch.Tensor] = {}
        self.attn: dict[int, torch.Tensor] = {}
        self.stream = None
        self.workspace = estimators.Workspace()  # reused by every chunk of every batch

    def layer_input(self, i: int, h: torch.Tensor) -> None:
        self.inputs[i] = h
        if i == 0:
            self.z[0] = h

    def attn_output(self, i: int, h: torch.Tensor) -> None:
        self.attn[i] = h.reshape(self.inputs[i].shape)  # OPT flattens tokens before its MLP norm

    def layer_output(self, i: int, h: torch.Tensor) -> None:
        self.z[i + 1] = h

    def _used(self, h: torch.Tensor) -> torch.Tensor:
        return h[:, self.opts.skip_first:, :]

    def _chunks(self, points: list[torch.Tensor]) -> list[range]:
        """Runs of consecutive point indices on one device whose stacked working set fits
        the budget. Ranges, so that results are stored through slices: indexing a GPU
        tensor with a Python list copies the list to the device, which syncs the stream."""
        b, t, d = self._used(points[0]).shape
        per_point = 4 * b * (t * d + 2 * t * t)

        def size(device: torch.device) -> int:
            budget = self.cpu_chunk_bytes if device.type == "cpu" else self.chunk_bytes
            return max(1, min(budget, self.chunk_bytes) // max(per_point, 1))

        out, start = [], 0
        for i in range(1, len(points) + 1):
            if (i == len(points) or points[i].device != points[start].device
                    or i - start >= size(points[start].device)):
                out.append(range(start, i))
                start = i
        return out

    def _entropies(self, points: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """([E, P] sums over the batch of each estimator, [P] non-finite counts)."""
        o = self.opts
        dev = self.acc.z_entropy.device
        ent = torch.zeros(len(ESTIMATORS), len(points), dtype=torch.float64, device=dev)
        bad = torch.zeros(len(points), dtype=torch.float64, device=dev)
        for idx in self._chunks(points):
            x = self._stack(points, idx)  # [c*B, N', D]
            at = slice(idx.start, idx.stop)
            vals = estimators.entropies(x, bins=o.bins, knn_k=o.knn_k, renyi_alpha=o.renyi_alpha,
                                        workspace=self.workspace)
            # A sample with NaN/inf gets NaN from every estimator. On the CPU the count is
            # made only then; on a GPU the branch would cost a host sync, counting does not.
            if x.device.type != "cpu" or torch.isnan(vals[0]).any():
                bad[at] = estimators.nonfinite_count(x).view(len(idx), -1).sum(-1).double().to(dev)
            vals = vals.double().nan_to_num_(nan=0.0, posinf=0.0, neginf=0.0)
            ent[:, at] = vals.view(len(ESTIMATORS), len(idx), -1).sum(-1).to(dev)
        return ent, bad

    @staticmethod
    def _per_point(fn, *lists: list[torch.Tensor], stack: bool | None = None) -> list[torch.Tensor]:
        """[fn(a[i], b[i], ...) for i]: per-token results [B, T] of each point (or pair).

        On one GPU the points are stacked, so that a single launch serves all of them; on
        a CPU (or across devices) they are taken one by one, because stacking would cost
        more memory traffic than the calls it saves.
        """
        if stack is None:
            devices = {p.device for points in lists for p in points}
            stack = len(devices) == 1 and next(iter(devices)).type != "cpu"
        if stack:
            b = lists[0][0].shape[0]
            out = fn(*(torch.stack(points).flatten(0, 1) for points in lists))
            return list(out.view(len(lists[0]), b, -1).unbind(0))
        return [fn(*args) for args in zip(*lists, strict=True)]

    def _cosines(self, xs: list[torch.Tensor], ys: list[torch.Tensor],
                 norms: dict[int, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """([P], [P]) sums over the batch of the cosine importance and of the angular
        distance of each (X, Y) pair, both from the same dot products and norms.

        ``norms`` maps id(point) to its token norms [B, T], computed once per point and
        shared by the two or three pairs it is part of.
        """
        dev = self.acc.z_entropy.device
        skip = self.opts.skip_first
        def dot(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:  # [B', N'] per-token x.y
            x, y = self._used(x).float(), self._used(y.to(x.device)).float()
            # The product goes to reused scratch: vecdot would allocate a fresh [B, N', D].
            product = self.workspace.take("product", x.shape, x.dtype, x.device)
            return torch.mul(x, y, out=product).sum(dim=-1)

        dots = self._per_point(dot, xs, ys)
        # One call over all pairs: [P*B, N'] rows.
        parts = (torch.cat([d.to(dev) for d in dots]),
                 torch.cat([norms[id(x)][:, skip:].to(dev) for x in xs]),
                 torch.cat([norms[id(y)][:, skip:].to(dev) for y in ys]))
        imp = estimators.cosine_from_parts(*parts)
        ang = estimators.angular_from_parts(*parts)
        return tuple(v.double().nan_to_num_(nan=0.0).view(len(xs), -1).sum(dim=1)
                     for v in (imp, ang))

    def _stack(self, points: list[torch.Tensor], idx) -> torch.Tensor:
        """The used positions of points[i] for i in idx, stacked along the sample axis."""
        if len(idx) == 1:
            return self._used(points[idx[0]])
        parts = [self._used(points[i]) for i in idx]
        b, t, d = parts[0].shape
        out = self.workspace.take("stack", (len(parts) * b, t, d), parts[0].dtype, parts[0].device)
        return torch.cat(parts, out=out)

    def flush(self) -> None:
        """Fold the batch's points into the accumulator and drop them.

        On a single CUDA device the work goes to a side stream: the next batch's forward
        pass overlaps with this batch's estimators, and nothing here waits for the GPU.
        """
        points = [*self.inputs.values(), *self.z.values(), *self.attn.values()]
        devices = {p.device for p in points}
        dev = next(iter(devices))
        if len(devices) == 1 and dev.type == "cuda" and dev == self.acc.z_entropy.device:
            if self.stream is None:
                self.stream = torch.cuda.Stream(device=dev)
            self.stream.wait_stream(torch.cuda.current_stream(dev))
            with torch.cuda.stream(self.stream):
                for p in points:
                    p.record_stream(self.stream)  # keep the allocator from reusing them early
                self._fold()
        else:
            self._fold()
        self.clear()

    def wait(self) -> None:
        """Make the current stream wait for the folded statistics."""
        if self.stream is not None:
            torch.cuda.current_stream(self.stream.device).wait_stream(self.stream)

    def _fold(self) -> None:
        acc = self.acc
        num_layers = acc.layer_cosine.shape[0]
        z = [self.z[j] for j in range(num_layers + 1)]
        attn = [self.attn[i] for i in range(num_layers)]
        x = [self.inputs[i] for i in range(num_layers)]
        ent, bad = self._entropies(z + attn)
        acc.z_entropy += ent[:, : num_layers + 1]
        acc.attn_entropy += ent[:, num_layers + 1:]
        acc.z_nonfinite += bad[: num_layers + 1]
        acc.attn_nonfinite += bad[num_layers + 1:]
        # Token norms of every point, all positions: for the cosines and the sink diagnostic.
        # A layer input is Z_i itself except when layers sit on different devices.
        points = z + attn + [h for h, zi in zip(x, z[:-1], strict=True) if h is not zi]
        token_norms = self._per_point(
            lambda h: torch.linalg.vector_norm(h, dim=-1, dtype=torch.float32), points)
        norms = {id(h): n for h, n in zip(points, token_norms, strict=True)}
        cos, ang = self._cosines(x + x, z[1:] + attn, norms)
        acc.layer_cosine += cos[:num_layers]
        acc.attn_cosine += cos[num_layers:]
        acc.span_angular[0] += ang[:num_layers]
        acc.attn_angular += ang[num_layers:]
        # Longer spans pair every Z_l with Z_{l+n}; one call per n keeps the stacked
        # working set on a GPU the size of the pairs above.
        for n in range(2, acc.span_angular.shape[0] + 1):
            _, ang = self._cosines(z[:num_layers + 1 - n], z[n:], norms)
            acc.span_angular[n - 1, :num_layers + 1 - n] += ang
        dev = acc.sink_max_norm.device
        sink = torch.stack([norms[id(h)].to(dev) for h in z]).amax(dim=1)  # [L+1, T]
        sink = sink.nan_to_num(nan=float("inf")).double()
        t = sink.shape[1]
        acc.sink_max_norm[:, :t] = torch.maximum(acc.sink_max_norm[:, :t], sink)

    def clear(self) -> None:
        self.inputs.clear()
        self.z.clear()
        self.attn.clear()


class _Recorder(BlockStats):
    """Keeps the raw hidden states instead of statistics (tests and diagnostics only)."""

    def __init__(self, num_layers: int):
        self.inputs = {}
        self.z: list[torch.Tensor | None] = [None] * (num_layers + 1)
        self.attn: list[torch.Tensor | None] = [None] * num_layers

    def clear(self) -> None:
        self.inputs.clear()

    def layer_input(self, i: int, h: torch.Tensor) -> None:
        self.inputs[i] = h
        if i == 0:
            self.z[0] = h.detach().clone()

    def attn_output(self, i: int, h: torch.Tensor) -> None:
        self.attn[i] = h.reshape(self.inputs[i].shape).detach().clone()

    def layer_output(self, i: int, h: torch.Tensor) -> None:
        self.inputs.pop(i)
        self.z[i + 1] = h.detach().clone()


@torch.inference_mode()
def record_points(model: nn.Module, input_ids: torch.Tensor) -> dict[str, list[torch.Tensor]]:
    """The raw points for a small batch: {"z": [L+1 x [B,T,D]], "attn": [L x [B,T,D]]}.

    Uses the same hooks as `capture`; memory grows with the batch, so keep it small.
    """
    rec = _Recorder(len(get_architecture(model).layers(model)))
    with block_hooks(model, rec):
        _body(model)(input_ids=input_ids.to(input_device(model)), use_cache=False)
    return {"z": rec.z, "attn": rec.attn}


def _hidden(args: tuple, kwargs: dict) -> torch.Tensor:
    if args:
        return args[0]
    return kwargs["hidden_states"]


def output_hidden(out) -> torch.Tensor:
    """The hidden state in a layer's or attention's output (some families return a tuple)."""
    return out[0] if isinstance(out, (tuple, list)) else out


@contextmanager
def block_hooks(model: nn.Module, stats: BlockStats) -> Iterator[None]:
    """Register the capture hooks on every decoder layer; always removed on exit."""
    arch = get_architecture(model)
    handles = []
    try:
        for i, layer in enumerate(arch.layers(model)):
            handles.append(layer.register_forward_pre_hook(
                lambda _m, a, kw, i=i: stats.layer_input(i, _hidden(a, kw)), with_kwargs=True))
            module, side = arch.attn_residual_module(layer)
            if side == "input":
                handles.append(module.register_forward_pre_hook(
                    lambda _m, a, kw, i=i: stats.attn_output(i, _hidden(a, kw)), with_kwargs=True))
            else:
                handles.append(module.register_forward_hook(
                    lambda _m, _a, out, i=i: stats.attn_output(i, output_hidden(out))))
            handles.append(layer.register_forward_hook(
                lambda _m, _a, out, i=i: stats.layer_output(i, output_hidden(out))))
        yield
    finally:
        for h in handles:
            h.remove()
        stats.clear()


def _body(model: nn.Module) -> nn.Module:
    """The decoder stack without the LM head: the head is never needed for entropy."""
    return model.base_model


def input_device(model: nn.Module) -> torch.device:
    return model.get_input_embeddings().weight.device


@torch.inference_mode()
def capture(
    model: nn.Module,
    input_ids: torch.Tensor,
    opts: EstimatorSettings,
    *,
    progress: Progress | None = None,
    distributed: bool | None = None,
) -> Accumulator:
    """Run the calibration windows [N, T] through the model once and return the statistics.

    Under torch.distributed (initialised by the caller, e.g. torchrun), each rank takes the
    windows rank, rank+W, ... and the statistics are all-reduced, so every rank returns the
    same totals as a single process would.
    """
    import torch.distributed as dist

    n, t = input_ids.shape
    opts.validate(seqlen=t)
    arch = get_architecture(model)
    num_layers = len(arch.layers(model))
    device = input_device(model)
    if distributed is None:
        distributed = dist.is_available() and dist.is_initialized()
    ids = input_ids
    if distributed:
        ids = input_ids[dist.get_rank()::dist.get_world_size()]
    acc_device = device if not distributed or dist.get_backend() == "nccl" else torch.device("cpu")
    acc = Accumulator.zeros(num_layers, t, acc_device)
    stats = BlockStats(acc, opts)
    body = _body(model)
    bs = opts.batch_size
    with block_hooks(model, stats):
        for start in range(0, ids.shape[0], bs):
            batch = ids[start:start + bs].to(device)
            body(input_ids=batch, use_cache=False)
            stats.flush()
            acc.samples += batch.shape[0]
            if progress is not None:
                done = min(start + bs, ids.shape[0])
                progress(done / max(ids.shape[0], 1), f"{done}/{ids.shape[0]} windows")
    stats.wait()
    if distributed:
        acc.all_reduce()
    return acc.to("cpu")
