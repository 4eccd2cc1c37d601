"""Page 7: write the pruned model for the current settings."""

from __future__ import annotations

import streamlit as st

from app import state
from app.logic.exports import (
    ENV_EXPORT_ROOT,
    FORMAT_LABELS,
    LAYOUT_LABELS,
    block_export_name,
    export_root,
    export_summary,
    follow_suggestion,
    gguf_snippets,
    load_snippet,
    measured_figures,
    resolve_export_dir,
)
from app.logic.provenance import changes, describe_stamp, prune_stamp
from app.logic.prune_view import block_list
from app.logic.runs import json_key
from entrodrop import service
from pruning.gguf_export import GGUF_TYPES

ss = st.session_state
st.title("Export")
profile, view = state.require_view()

root = export_root()
current = state.analysis_is_current()
suggested = block_export_name(profile.spec, view)
ss["export_name"] = follow_suggestion(ss["export_name"], ss.get("_export_suggested"), suggested)
ss["_export_suggested"] = suggested
stamp = prune_stamp(view, state.model_settings().spec)  # the model now chosen

st.markdown(
    f"Writes the model with the **{view.k} {view.granularity} blocks** chosen by "
    f"**{view.criterion}** removed ({block_list(view.blocks)}), "
    "with its tokenizer and a manifest (`entrodrop.json`) recording how it was made."
)
st.caption(f"Export root: `{root}` (set with ${ENV_EXPORT_ROOT}).")
st.text_input("Export folder name (inside the export root)", key="export_name",
              persist_state="session",
              help="A folder name such as my-model-k4. '..' and paths outside the root "
                   "are refused.")
st.checkbox("Overwrite an existing export of that name", key="export_overwrite",
            persist_state="session")
st.radio("Format", list(FORMAT_LABELS), key="export_format", format_func=FORMAT_LABELS.get,
         horizontal=True, persist_state="session",
         help="GGUF: one file that llama.cpp (and tools built on it) runs. Llama-family "
              "attn exports use llama.cpp's per-layer 'deci' architecture.")
if ss["export_format"] == "gguf":
    st.selectbox("GGUF weights", GGUF_TYPES, key="export_gguf_type", persist_state="session",
                 help="Storage of the weight matrices; norms stay f32. q8_0 is 8-bit.")
layout = "transformers"
if view.granularity == "attn" and ss["export_format"] == "hf":
    st.radio("Runs in", list(LAYOUT_LABELS), key="export_layout",
             format_func=LAYOUT_LABELS.get, horizontal=True, persist_state="session",
             help="vLLM and transformers: one folder in the DeciLM (nemotron-nas) form that "
                  "vLLM runs with trust_remote_code=True, and transformers too. Llama and "
                  "Mistral only; a pruned block 0 keeps its attention with a zero output "
                  "projection.")
    layout = ss["export_layout"]
    st.caption("Attention-pruned exports carry `modeling_entrodrop.py` and load with "
               "`trust_remote_code=True`. Layer-pruned exports are standard checkpoints.")

if st.button("Export pruned model", key="run_export", type="primary", icon=":material/save:",
             disabled=view.k == 0 or not current):
    ss.pop("export_result", None)  # a failed export leaves no earlier success on show
    with state.guard("Exporting"):
        target = resolve_export_dir(ss["export_name"], root)
        bar, update = state.progress_bar("Export")
        loaded = state.loaded_model(update)
        measured = measured_figures(
            view, ss.get("budget_result"), ss.get("speed_result"),
            json_key(view.granularity, view.blocks, loaded.identity))
        path = service.export_blocks(loaded, profile, view.decision, target,
                                     measured=measured, overwrite=bool(ss["export_overwrite"]),
                                     progress=update, fmt=ss["export_format"],
                                     gguf_type=ss["export_gguf_type"], layout=layout)
        bar.progress(1.0, text="Export done")
        ss["export_result"] = {**export_summary(path), "stamp": stamp}
if not current:
    st.caption("Export is off while the analysis is stale: run it again on the Calibration "
               "page, so the exported blocks are chosen for the current model and data.")
elif view.k == 0:
    st.caption("Set K above 0 in the sidebar to export a pruned model.")

result = ss.get("export_result")
changed = changes(result.get("stamp", {}), stamp) if result else []
if result and changed:
    st.info(f"The last export, `{result['path']}`, was made for other settings "
            f"({'; '.join(changed)}); it is still on disk. Press **Export pruned model** to "
            "export the current choice.", icon=":material/history:")
elif result:
    st.success(f"Exported to `{result['path']}`", icon=":material/check_circle:")
    c1, c2, c3 = st.columns(3)
    if result.get("granularity") == "attn":
        c1.metric("Attention sub-blocks removed",
                  f"{len(result.get('blocks') or [])} of {result.get('num_layers_before')}")
    else:
        c1.metric("Layers", f"{result.get('num_layers_after')} of "
                            f"{result.get('num_layers_before')}")
    before, after = result.get("parameters_before"), result.get("parameters_after")
    if before and after:
        c2.metric("Parameters", f"{after / 1e6:.2f} M", f"-{(1 - after / before) * 100:.1f} %",
                  delta_color="inverse")
    c3.metric("Size on disk", f"{result['bytes'] / 2**20:.1f} MiB")
    st.caption(f"{result.get('granularity')} blocks removed: {result.get('blocks')} · "
               f"{result['files']} files")
    st.caption("Exported with " + describe_stamp(result["stamp"]))
    if result.get("format") == "gguf":
        gguf = result.get("gguf") or {}
        st.caption(f"GGUF: llama.cpp architecture `{gguf.get('architecture')}`, weights "
                   f"`{gguf.get('gguf_type')}`")
        snippets = gguf_snippets(result["path"])
        st.markdown("**Run it with llama.cpp**")
        st.code(snippets["llama-cli"], language="bash")
        st.markdown("**Or with its Python binding** (`pip install llama-cpp-python`)")
        st.code(snippets["python"], language="python")
    else:
        st.markdown("**Load it**")
        st.code(load_snippet(result["path"], result.get("granularity") or "layer",
                             result.get("layout", "transformers")), language="python")
