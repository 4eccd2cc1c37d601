"""Layer-streaming capture: the statistics of `analysis.capture.capture`, one layer in memory.

1. The skeleton (no weights) and the body's non-layer weights (embeddings) give, for every
   batch, Z_0 and the extra inputs of each layer, from the model's own forward
   (`skeleton.record_layer_inputs`). The body's weights are then dropped.
2. Layer by layer: its weights are read from the checkpoint, every batch's hidden state
   goes through it with its recorded inputs, and the same hooks and `BlockStats` folding
   as `capture` turn Z_i, A_i and Z_{i+1} into sums in the same `Accumulator`. The layer is
   then dropped. The next layer's tensors are read on a background thread meanwhile.

At any time at most two layers' weights exist (the current one and the prefetched one),
plus the calibration set's hidden states [N, T, D] in the compute dtype, and, on the CPU,
those of the last S-1 layers (S = `span_count(L)`), which the angular spans pair with.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import torch

from analysis.architectures import get_architecture
from analysis.capture import Accumulator, BlockStats, block_hooks, output_hidden
from analysis.settings import EstimatorSettings
from analysis.streaming import skeleton
from analysis.streaming.sources import TensorSource, open_source

Progress = Callable[[float, str], None]


def read_tensors(source: TensorSource, names: dict[str, str], dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """{model name: tensor} read from `source` ({model name: source name}), as `dtype`.

    Floating tensors are copied into process memory (`copy=True`): a safetensors read is
    backed by the file until touched, and the point of reading ahead is to touch it now,
    on the reader's thread, not during the layer's forward pass. A source whose reads are
    already fresh process memory (`owns_reads`, e.g. GGUF dequantisation) is not copied
    again when the dtype matches: for an 8B model's embedding that copy was 2.1 GB at peak.
    """
    owned = bool(getattr(source, "owns_reads", False))
    out = {}
    for name, stored in names.items():
        t = source.read(stored)
        if t.is_floating_point():
            out[name] = t.to(dtype, copy=not owned)
        else:
            out[name] = t if owned else t.clone()
        del t
    return out


class _LayerStats(BlockStats):
    """`BlockStats` folding one layer's points per flush instead of the whole stack.

    After layer i's forward pass on a batch it holds Z_i (and, for layer 0, Z_0), A_i and
    Z_{i+1}; the same entropy, cosine and norm code as `capture` folds them into the
    accumulator's rows for those points.
    """

    def __init__(self, acc: Accumulator, opts: EstimatorSettings):
        super().__init__(acc, opts)
        self.batch = 0
        """Index of the batch being folded, set by the engine before each flush."""
        self.history: dict[int, list[tuple[torch.Tensor, torch.Tensor]]] = {}
        """batch -> (Z_j on the CPU, its token norms) for the last S-1 layer inputs: the
        angular spans pair Z_{i+1} with Z_{i+1-n}, n <= S."""

    def _fold(self) -> None:
        acc = self.acc
        (i,) = self.inputs
        x, a, y = self.inputs[i], self.attn[i], self.z[i + 1]
        z_rows = sorted(self.z)  # [0, 1] for layer 0, else [i + 1]
        zs = [self.z[j] for j in z_rows]
        ent, bad = self._entropies(zs + [a])
        for col, j in enumerate(z_rows):
            acc.z_entropy[:, j] += ent[:, col]
            acc.z_nonfinite[j] += bad[col]
        acc.attn_entropy[:, i] += ent[:, -1]
        acc.attn_nonfinite[i] += bad[-1]
        points = zs + [a] + ([] if any(x is z for z in zs) else [x])
        token_norms = self._per_point(
            lambda h: torch.linalg.vector_norm(h, dim=-1, dtype=torch.float32), points)
        norms = {id(h): n for h, n in zip(points, token_norms, strict=True)}
        cos, ang = self._cosines([x, x], [y, a], norms)
        acc.layer_cosine[i] += cos[0]
        acc.attn_cosine[i] += cos[1]
        acc.span_angular[0, i] += ang[0]
        acc.attn_angular[i] += ang[1]
        # Spans n >= 2 ending at Z_{i+1}: the history holds Z_{i-1}, Z_{i-2}, ... newest last.
        history = self.history.setdefault(self.batch, [])
        earlier = history[::-1]  # Z_{i-1}, Z_{i-2}, ...: n = 2, 3, ...
        if earlier:
            for h, h_norm in earlier:
                norms[id(h)] = h_norm
            _, ang = self._cosines([y] * len(earlier), [h for h, _ in earlier], norms)
            for n, value in enumerate(ang.tolist(), start=2):
                acc.span_angular[n - 1, i + 1 - n] += value
        keep = acc.span_angular.shape[0] - 1
        if keep > 0:
            # On the CPU: S-1 copies of the calibration set's hidden states would not fit
            # on the device next to the layer when streaming is needed at all.
            history.append((x.to("cpu"), norms[id(x)].to("cpu")))
            del history[:-keep]
        dev = acc.sink_max_norm.device
        for j, h in zip(z_rows, zs, strict=True):
            sink = norms[id(h)].to(dev).amax(dim=0).nan_to_num(nan=float("inf")).double()
            t = sink.shape[0]
            acc.sink_max_norm[j, :t] = torch.maximum(acc.sink_max_norm[j, :t], sink)


@torch.inference_mode()
def stream_capture(
    source: str | Path | TensorSource,
    input_ids: torch.Tensor,
    opts: EstimatorSettings,
    *,
    device: torch.device | str = "cpu",
    dtype: torch.dtype | str = torch.float32,
    batch_size: int | None = None,
    progress: Progress | None = None,
    distributed: bool | None = None,
) -> Accumulator:
    """Run the calibration windows [N, T] through the checkpoint layer by layer and return
    the statistics, as `analysis.capture.capture` does for a model in memory.

    `source` is a model spec (`demo:...`, a folder, a `.gguf` file, a hub id in the local
    cache), a path, or an open `TensorSource`. `device` and `dtype` also take the settings'
    names ("auto", "cuda", "bfloat16", ...). `batch_size` defaults to `opts.batch_size`.
    Under torch.distributed each rank takes windows rank, rank+W, ... and the statistics
    are all-reduced, so every rank returns the totals.
    """
    import torch.distributed as dist

    n, t = input_ids.shape
    opts.validate(seqlen=t)
    from analysis.models import resolve_device, resolve_dtype

    device = resolve_device(device) if isinstance(device, str) else device
    dtype = resolve_dtype(dtype, device) if isinstance(dtype, str) else dtype
    src = open_source(source)
    model = skeleton.build_skeleton(src.config, dtype)
    arch = get_architecture(model)
    layers = arch.layers(model)
    num_layers = len(layers)
    layer_names = [skeleton.checkpoint_names(model, src, names)
                   for names in skeleton.layer_param_names(model)]
    body_names = skeleton.checkpoint_names(model, src, skeleton.body_param_names(model))
    skeleton.move_buffers(model, device)

    if distributed is None:
        distributed = dist.is_available() and dist.is_initialized()
    ids = input_ids[dist.get_rank()::dist.get_world_size()] if distributed else input_ids
    acc_device = device if not distributed or dist.get_backend() == "nccl" else torch.device("cpu")
    acc = Accumulator.zeros(num_layers, t, acc_device)
    bs = batch_size or opts.batch_size
    batches = [ids[s:s + bs] for s in range(0, ids.shape[0], bs)]

    _report(progress, 0.0, "embedding the calibration windows")
    hidden: list[torch.Tensor] = []
    layer_inputs: list[list[tuple[tuple, dict]]] = []  # [batch][layer] -> (args, kwargs)
    with skeleton.loaded(model, read_tensors(src, body_names, dtype), device):
        for batch in batches:
            z0, calls = skeleton.record_layer_inputs(model, batch, device)
            hidden.append(z0)
            layer_inputs.append(calls)
    # The first layer is read only now: a large vocabulary's embedding matrix can weigh
    # more than two layers, and it is gone at this point.
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="entrodrop-prefetch") as pool:
        pending: Future | None = pool.submit(read_tensors, src, layer_names[0], dtype)

        stats = _LayerStats(acc, opts)
        steps = max(num_layers * len(batches), 1)
        with block_hooks(model, stats):
            for i, layer in enumerate(layers):
                tensors = pending.result()
                pending = None
                with skeleton.loaded(model, tensors, device):
                    # Read ahead only now: the previous layer is gone, so at most this
                    # layer and the next exist at once.
                    if i + 1 < num_layers:
                        pending = pool.submit(read_tensors, src, layer_names[i + 1], dtype)
                    for b, h in enumerate(hidden):
                        args, kwargs = layer_inputs[b][i]
                        layer_inputs[b][i] = None  # this layer's masks are not needed again
                        hidden[b] = output_hidden(layer(h, *args, **kwargs))
                        stats.batch = b
                        stats.flush()
                        _report(progress, (i * len(batches) + b + 1) / steps,
                                f"layer {i + 1}/{num_layers}, {min((b + 1) * bs, len(ids))}/{len(ids)} windows")
        stats.wait()
    acc.samples += ids.shape[0]
    if distributed:
        acc.all_reduce()
    return acc.to("cpu")


def _report(progress: Progress | None, frac: float, msg: str) -> None:
    if progress is not None:
        progress(frac, msg)
