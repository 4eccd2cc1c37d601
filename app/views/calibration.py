"""Page 2: calibration data, estimator options, and running the analysis."""

from __future__ import annotations

import streamlit as st

from analysis.settings import ESTIMATORS
from app import state
from app.logic import inputs
from app.logic.errors import describe_error
from app.logic.runs import request_key, run_label
from entrodrop import service

ss = st.session_state
st.title("Calibration")
st.markdown(
    "Entropy is measured on N windows of T tokens each. Choose one or more sources: with "
    "several, every analysis page can switch between them and the Calibration heatmap "
    "shows how much the choice of data moves the ranking."
)


def _add_file_source(path: str) -> None:
    """Select the calibration file `path` as a source once it reads as calibration text (no
    model needed): a file that is not is refused here, with USER_ERRORS, rather than becoming
    a source that makes every later analysis fail."""
    service.read_calibration_file(path, ss["cal_text_column"].strip() or None)
    ss["cal_uploaded"] = [*[p for p in ss["cal_uploaded"] if p != path], path]
    ss["cal_sources"] = [*[s for s in ss["cal_sources"] if s != path], path]


def _on_upload() -> None:
    upload = ss.get("cal_upload")
    ss["cal_upload_error"] = None
    if upload is None:
        return
    try:
        path = str(inputs.save_upload(upload.name, upload.getvalue(),
                                      max_bytes=inputs.upload_limit_bytes()))
        _add_file_source(path)
    except service.USER_ERRORS as exc:
        ss["cal_upload_error"] = f"**Upload refused.** {upload.name}: {describe_error(exc)}"
        return
    ss["cal_check_upload"] = path


def _on_add_path() -> None:
    path = ss.get("cal_path_input", "").strip()
    ss["cal_upload_error"] = None
    if not path:
        return
    try:
        _add_file_source(path)
    except service.USER_ERRORS as exc:
        ss["cal_upload_error"] = f"**File refused.** {describe_error(exc)}"
        return
    ss["cal_path_input"] = ""


with state.guard("Listing the calibration sources"):
    sources = service.calibration_sources()
    options = inputs.source_options(sources, ss["cal_uploaded"])
    descriptions = {s["name"]: s["description"] for s in sources}
    ss["cal_sources"] = [s for s in ss["cal_sources"] if s in options]
    st.multiselect("Calibration sources", options, key="cal_sources", persist_state="session",
                   help="builtin: text already on this machine (offline). preset: the research "
                        "corpora (need the hub or a local cache). Files: uploaded or typed below.")
    with st.expander("What the sources are"):
        st.table([{"source": k, "description": v} for k, v in descriptions.items()
                  if k != "<path>"])

limit_mb = inputs.upload_limit_bytes() / 2**20
st.file_uploader(f"Upload a calibration file (.txt, .jsonl, .csv, .parquet; at most "
                 f"{limit_mb:.0f} MB)", type=["txt", "jsonl", "csv", "parquet"],
                 key="cal_upload", on_change=_on_upload, max_upload_size=max(1, int(limit_mb)))
st.text_input("…or the path of a file on the server", key="cal_path_input",
              on_change=_on_add_path, placeholder="/data/my-corpus.jsonl (press Enter to add)")
st.text_input("Text column for .jsonl/.csv/.parquet files (blank: guess text, content, "
              "document, body)", key="cal_text_column", persist_state="session")
if ss.get("cal_upload_error"):
    st.error(ss["cal_upload_error"], icon=":material/error:")

c1, c2, c3 = st.columns(3)
c1.number_input("N (windows)", min_value=1, max_value=100_000, step=1, key="cal_samples",
                persist_state="session")
c2.number_input("T (tokens per window)", min_value=2, max_value=131_072, step=16,
                key="cal_seqlen", persist_state="session")
c3.number_input("Seed", min_value=0, max_value=2**31 - 1, step=1, key="cal_seed",
                persist_state="session",
                help="The research code uses 2024.")

# A fresh upload is checked at once when the model's tokenizer is at hand.
check = ss.pop("cal_check_upload", None)
if check and state.peek_model() is not None:
    with state.guard(f"Reading {check}"):
        cal = inputs.calibration_settings([check], samples=int(ss["cal_samples"]),
                                          seqlen=int(ss["cal_seqlen"]), seed=int(ss["cal_seed"]),
                                          text_column=ss["cal_text_column"])[0]
        info = service.preview_windows(state.peek_model(), cal, n=1)
        column = f", text column `{info['text_column']}`" if info["text_column"] else ""
        st.success(f"`{check}` is usable: {info['documents']} document(s){column}.",
                   icon=":material/check_circle:")
elif check:
    st.info("The file is read when you preview or run the analysis (it needs the model's "
            "tokenizer).", icon=":material/info:")

with st.expander("Estimator options", expanded=False):
    e1, e2, e3 = st.columns(3)
    e1.number_input("bins (bucket estimator, B)", min_value=2, max_value=10_000, step=1,
                    key="est_bins", persist_state="session",
                    help="Research code: 20 for Llama, 80 for Mistral.")
    e2.number_input("k (knn estimator)", min_value=1, max_value=10_000, step=1,
                    key="est_knn_k", persist_state="session",
                    help="The k-th nearest neighbour; research code 25.")
    e3.number_input("alpha (Renyi estimator)", min_value=0.01, max_value=999.0, step=0.5,
                    key="est_renyi_alpha", persist_state="session",
                    help="Must not be 1; research code 4.")
    e4, e5 = st.columns(2)
    e4.number_input("skip_first (positions left out)", min_value=0, max_value=100_000,
                    step=1, key="est_skip_first", persist_state="session")
    e5.number_input("Batch size (windows per forward pass)", min_value=1, max_value=4096,
                    step=1, key="est_batch_size", persist_state="session")
    st.caption(
        "**Attention sink.** Real models put a huge activation on the first position: in "
        "SmolLM2-135M position 0 reaches a norm of about 27,000 from layer 12 on, while every "
        "other position stays under 1,000. With min-max histograms that one token flattens "
        "the entropy curve. `skip_first = 1` leaves it out; `skip_first = 0` reproduces the "
        "research code exactly. The Entropy dynamics page shows the diagnostic."
    )

b1, b2 = st.columns(2)
preview_clicked = b1.button("Preview windows", key="preview_windows",
                            icon=":material/visibility:")
run_clicked = b2.button("Run analysis", key="run_analysis", type="primary",
                        icon=":material/play_arrow:")

if preview_clicked:
    with state.guard("Previewing the calibration windows"):
        bar, update = state.progress_bar("Preparing the model")
        loaded = state.loaded_model(update)
        bar.empty()
        for cal in state.calibration_settings():
            info = service.preview_windows(loaded, cal, n=3)
            with st.expander(f"{cal.spec}: {info['shape'][0]} × {info['shape'][1]} tokens",
                             expanded=True):
                for i, text in enumerate(info["windows"]):
                    st.text(f"window {i}: {text}")

request = None
with state.guard("Checking the settings"):
    request = state.analysis_request()

if request is not None:
    key = request_key(request)
    current = state.analysis()
    if run_clicked:
        with state.guard("Running the analysis"):
            bar, update = state.progress_bar("Analysis")
            record = state.analyse(request, update)
            bar.progress(1.0, text=f"Analysis done in {record.seconds:.1f} s")
            st.rerun()  # the sidebar's pruning controls appear with the new result
    elif current is None or current.key != key:
        hit = state.cache_lookup("analysis", key)
        if hit is not None:
            state.adopt_analysis(request, key, hit)
            st.rerun()

record = state.analysis()
if record is not None:
    st.subheader("Result")
    if request is not None and record.key != request_key(request):
        st.warning("These results are for earlier settings; press **Run analysis** to "
                   "analyse the current ones.", icon=":material/history:")
    rows = []
    for i, (run, cached) in enumerate(zip(record.runs, record.from_cache, strict=True)):
        cal = run.calibration
        rows.append({"set": run_label(run, i), "N": cal["samples"], "T": cal["seqlen"],
                     "layers": run.num_layers, "from cache": cached,
                     "S_start (bucket/knn/renyi)": "/".join(str(run.s_start[e])
                                                            for e in ESTIMATORS),
                     "seconds": round(run.seconds, 2)})
    st.dataframe(rows, hide_index=True)
    for msg in record.messages:
        st.caption(msg)
    for run in record.runs:
        for warning in run.warnings:
            st.warning(warning, icon=":material/warning:")
    st.page_link("views/dynamics.py", label="See the entropy dynamics",
                 icon=":material/arrow_forward:")
