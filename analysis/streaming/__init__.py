"""Layer-streaming analysis: models larger than memory, one decoder layer at a time.

    from analysis.streaming import stream_capture, weight_bytes_of, should_stream

    acc = stream_capture("path/to/model-folder", input_ids, EstimatorSettings())
    profile = build_profile(acc, ...)  # the same Accumulator as analysis.capture.capture

- `stream_capture(source, input_ids [N, T], opts, *, device, dtype, batch_size, progress)`
  returns an `Accumulator` with the same contents as `capture` on the loaded model.
- `open_source(spec)` gives a `TensorSource` (safetensors folder or GGUF file).
- `weight_bytes_of(spec, dtype)` and `should_stream(weight_bytes, device)` decide whether
  an in-memory load would fit.
"""

from analysis.streaming.engine import stream_capture
from analysis.streaming.memory import free_bytes, should_stream
from analysis.streaming.plan import LoadPlan, architecture_name, load_tokenizer, plan_load
from analysis.streaming.sources import (
    SafetensorsSource,
    StreamingError,
    TensorSource,
    open_source,
    resolve_checkpoint,
    weight_bytes_of,
)

__all__ = [
    "LoadPlan", "architecture_name", "load_tokenizer", "plan_load",
    "SafetensorsSource", "StreamingError", "TensorSource", "free_bytes", "open_source",
    "resolve_checkpoint", "should_stream", "stream_capture", "weight_bytes_of",
]
