"""The sidebar: the shared model and calibration choices, and the pruning controls that
every analysis page uses (granularity, criterion, S_start policy, K)."""

from __future__ import annotations

import threading
from collections.abc import Callable

import streamlit as st

from analysis.profile import Profile
from analysis.settings import ESTIMATORS, GRANULARITIES
from app import state
from app.logic.prune_view import PruneView, block_list, build_view
from app.logic.runs import run_label
from entrodrop import service
from pruning.ranking import PROFILE_CRITERIA, RANDOM_SEEDS
from pruning.stages import STAGE_POLICIES, max_k

CRITERION_LABELS = {
    "knn": "knn entropy (research default)",
    "bucket": "bucket entropy (histogram)",
    "renyi": "Renyi entropy",
    "cosine": "cosine (ShortGPT / LLMDrop)",
    "angular": "angular distance, one block (Gromov et al.)",
    "angular_span": "angular distance, best span of K layers (Gromov et al.)",
    "reverse": "reverse order (last blocks first)",
    **{f"random:{seed}": f"random order, seed {seed} (control)" for seed in RANDOM_SEEDS},
}
POLICY_LABELS = {
    "auto": "auto (minimum of H in the first half)",
    "reference": "reference (freeze 0, 1, L-1)",
    "manual": "manual (slider or drag on the chart)",
}


def render(page_draws_tail: bool = False) -> None:
    """The sidebar. With `page_draws_tail` the page draws K, the pruned blocks and the
    report button itself (`page_with_tail`), inside the st.fragment that K and S_start
    rerun."""
    ss = st.session_state
    ss["_view"] = None
    _TAIL.slot = None
    _REPORT.holder = None
    with st.sidebar:
        st.markdown("### Model")
        # Three fixed slots, each filled or emptied on its own: a container redrawn with fewer
        # children would keep the first draw's extra ones until the next run.
        _STATUS.slots = (st.empty(), st.empty(), st.empty())
        _model_status()
        st.markdown("### Calibration")
        sources = ", ".join(f"`{s}`" for s in ss["cal_sources"]) or "none chosen"
        st.caption(f"{sources} · N={ss['cal_samples']} × T={ss['cal_seqlen']} · "
                   f"seed {ss['cal_seed']} · skip_first {ss['est_skip_first']}")
        record = state.analysis()
        if record is None:
            st.info("No analysis yet: choose data on the Calibration page and run it.",
                    icon=":material/info:")
            return
        hits = sum(record.from_cache)
        st.caption(f"Analysis: {len(record.runs)} calibration run(s), {hits} from cache.")
        st.caption(f"Analysed model: `{record.request.model.spec}`")
        st.markdown("### Pruning")
        _pruning_controls(record.runs)
        slot = st.container()
        if not page_draws_tail:
            draw_tail(slot)
            return
        # The page draws the tail inside its fragment; the view is still built here, for
        # the page's checks before its fragment. A failure is shown in the sidebar now
        # (the page then stops, and its fragment would not draw the tail).
        try:
            ss["_view"] = _plan_and_view(state.current_run())[2]
        except Exception:
            draw_tail(slot)
        else:
            _TAIL.slot = slot


def tail_slot():
    """The sidebar container for K, the pruned blocks and the report button, created in
    this full run: a page passes it to its fragment (`page_with_tail`), so a K move reruns
    only that fragment while the slider stays in the sidebar. None when the sidebar drew
    them itself (the page was not rendered with `page_draws_tail`)."""
    return getattr(_TAIL, "slot", None)


# The tail's container of this full script run (one thread per session run).
_TAIL = threading.local()


# The model-status placeholder of this script run (one thread per session run).
_STATUS = threading.local()


def _model_status() -> None:
    """The model line and, when it applies, the load failure and the stale analysis."""
    ss = st.session_state
    loaded = state.peek_model()
    failure = state.load_failure() if loaded is None else None
    status = ("loaded" if loaded is not None
              else "**load failed**" if failure else "not loaded yet")
    line, failed, stale = _STATUS.slots
    line.caption(f"`{ss['model_spec'] or '(no model chosen)'}` · {ss['device']} / "
                 f"{ss['dtype']} · {status}")
    if failure:
        failed.warning(f"**This model did not load.** {failure}", icon=":material/error:")
    else:
        failed.empty()
    if state.analysis() is not None and not state.analysis_is_current():
        stale.warning("**Stale analysis:** it was made with other settings than the current "
                      "ones; run it again on the Calibration page.", icon=":material/history:")
    else:
        stale.empty()


def refresh() -> None:
    """Redraw the model status after the page ran: the page may have changed the model
    (the Model page sets it, and a load may have just failed or succeeded). The report
    button, drawn before the page, gets the results the page made in this run."""
    if getattr(_STATUS, "slots", None) is not None:
        _model_status()
        _STATUS.slots = None
    holder = getattr(_REPORT, "holder", None)
    if holder is not None:
        from app import report

        holder["snapshot"] = report.snapshot()
        _REPORT.holder = None


def _pruning_controls(runs: list[Profile]) -> None:
    ss = st.session_state
    if len(runs) > 1:
        ss["run_index"] = min(int(ss["run_index"]), len(runs) - 1)
        st.selectbox("Calibration set for ranking", range(len(runs)), key="run_index",
                     persist_state="session",
                     format_func=lambda i: run_label(runs[i], i))
    else:
        ss["run_index"] = 0
    profile = runs[int(ss["run_index"])]
    num_layers = profile.num_layers
    st.selectbox("Granularity", GRANULARITIES, key="granularity", persist_state="session",
                 help="layer: remove whole decoder layers. attn: make the attention sub-block "
                      "the identity and keep the MLP.")
    # ppl_greedy needs the model and minutes of search: the CLI runs it (`--criteria`).
    st.selectbox("Criterion", PROFILE_CRITERIA, key="criterion", persist_state="session",
                 format_func=CRITERION_LABELS.get,
                 help="The order is compared with the cosine baseline on the Prune list page.")
    st.radio("S_start policy", STAGE_POLICIES, key="stage_policy", persist_state="session",
             format_func=POLICY_LABELS.get)
    if ss["stage_policy"] == "auto":
        st.selectbox("Curve for the automatic S_start", ESTIMATORS, key="stage_estimator",
                     persist_state="session",
                     help="S_start = the argmin of this estimator's H(Z_j) over the first half "
                          "of the depth. bucket is the default: the knn curve sits at its floor "
                          "at Z_0 (repeated tokens share an embedding), which puts S_start at 0.")
    st.checkbox("Allow pruning the last block", key="allow_last", persist_state="session",
                disabled=ss["stage_policy"] == "reference")
    ss["s_start"] = min(max(int(ss["s_start"]), 0), num_layers - 1)


def _plan_and_view(profile: Profile):
    """(stage plan, largest K, prune view) for the sidebar's settings; K is clamped to the
    plan (a smaller S_start range may have left it too large)."""
    ss = st.session_state
    plan = service.stage_plan(profile, policy=ss["stage_policy"], s_start=ss["s_start"],
                              allow_last=ss["allow_last"],
                              stage_estimator=ss["stage_estimator"])
    if ss["stage_policy"] != "manual":
        ss["s_start"] = min(plan.s_start, profile.num_layers - 1)
    limit = max_k(plan)
    ss["k"] = min(max(int(ss["k"]), 0), limit)
    return plan, limit, build_view(profile, **state.view_settings())


def draw_tail(slot) -> None:
    """The K slider, the pruned blocks and the report button, into `slot`; the prune view
    goes to the session's `_view` (None when the settings cannot be applied: the error is
    shown)."""
    ss = st.session_state
    ss["_view"] = None
    with slot:
        with state.guard("Planning the stages"):
            plan, limit, view = _plan_and_view(state.current_run())
            ss["_view"] = view
            _k_controls(plan, limit, view)
        _report_button()


def page_with_tail(slot, what: str, draw_page: Callable[[PruneView], None]) -> None:
    """The body of a page's st.fragment: `draw_page(view)` in the page, then the sidebar's
    tail (`draw_tail`'s K slider, pruned blocks and report button) into `slot`.

    The fragment reruns on its own when a widget it drew changes: the K slider drawn here
    (the sidebar slot is outside the fragment, the slider still belongs to it) and the
    page's own controls. The tail is drawn after the page because it is in the sidebar
    either way, and the browser then gets the page's answer (the table, the charts) first.
    """
    ss = st.session_state
    ss["_view"] = None
    failure = None
    try:
        plan, limit, view = _plan_and_view(state.current_run())
    except Exception as exc:  # shown in the sidebar, as draw_tail shows it
        failure = exc
    else:
        ss["_view"] = view
        with state.guard(what):
            draw_page(view)
    if slot is None:  # the sidebar has drawn them
        return
    with slot:
        if failure is not None:
            state.show_error("Planning the stages", failure)
        else:
            _k_controls(plan, limit, view)
        _report_button()


def _k_controls(plan, limit: int, view: PruneView) -> None:
    if limit > 0:
        st.slider("K (blocks to prune)", min_value=0, max_value=limit, key="k",
                  persist_state="session",
                  help=f"At most the {limit} prunable blocks (Stage 2"
                       f"{'' if plan.allow_last else ', last block frozen'}).")
    else:
        st.warning("No block can be pruned with this S_start; move it left.")
    st.caption(f"S_start = {plan.s_start} · {len(plan.prunable)} prunable · pruned at "
               f"K={view.k}: **{block_list(view.blocks)}**")


# The report button's snapshot holder of this script run (one thread per session run).
_REPORT = threading.local()


def _report_button() -> None:
    from app import report

    # The HTML is built on click (on another thread, without the session), from the last
    # snapshot of the run that drew the button: `refresh` takes it again after the page,
    # so results made by this run's page are in it.
    holder = {"snapshot": report.snapshot()}
    _REPORT.holder = holder
    st.download_button(
        "Download report (HTML)", data=lambda: report.build_html(holder["snapshot"]),
        file_name="entrodrop-report.html", mime="text/html", key="download_report",
        on_click="ignore", icon=":material/download:",
        help="One self-contained HTML file with every figure and the settings (no CDN).",
    )
