"""Everything after the analysis, for models larger than memory: no step holds more than
two decoder layers' weights.

    from pruning.streaming import (stream_quality, stream_quality_curves,
                                   stream_export_blocks, stream_export_width,
                                   stream_neuron_scores)

- `stream_quality(source, input_ids [N, T], {name: spec}, *, device, dtype, batch_size,
  progress) -> {"unpruned": Quality, name: Quality}`: `pruning.evaluate.evaluate_quality`
  for every variant in one pass over the layers. A spec is `("layer", blocks)`,
  `("attn", blocks)`, `("width", keep)` or a dict combining them.
- `stream_quality_curves(source, input_ids, granularity, orders, ks, **kw) -> rows`:
  `pruning.evaluate.quality_curves`.
- `stream_export_blocks(source, out_dir, granularity, blocks, manifest, *, overwrite,
  progress, dtype, tokenizer, max_shard_bytes, layout) -> Path`:
  `pruning.export.export_pruned`.
- `stream_export_width(source, out_dir, keep, manifest, *, ...) -> Path`:
  `pruning.width.export_width_pruned`.
- `stream_neuron_scores(source, input_ids, criterion, *, device, dtype, batch_size,
  progress) -> NeuronScores`: `analysis.taylor.neuron_scores`.

`source` is a model spec (`demo:...`, a folder, a `.gguf` file, a hub id in the local
cache), a path, or an open `analysis.streaming.TensorSource`. `progress(fraction,
message)` as in `analysis.streaming.stream_capture`. See docs/STREAMING.md.
"""

from pruning.streaming.export import stream_export_blocks, stream_export_width
from pruning.streaming.quality import stream_quality, stream_quality_curves
from pruning.streaming.taylor import stream_neuron_scores
from pruning.streaming.variants import LayerAction, VariantSpecError, layer_actions

__all__ = [
    "LayerAction", "VariantSpecError", "layer_actions", "stream_export_blocks",
    "stream_export_width", "stream_neuron_scores", "stream_quality", "stream_quality_curves",
]
