"""The dashboard's view logic: plain Python on typed results, no Streamlit, no model.

Pages call `entrodrop.service` for every operation that touches a model, and these modules
to shape its typed results (`Profile`, `Decision`, ...) for display and download:

- `prune_view`: one prune choice, the criterion's and the baseline's `Decision` side by side.
- `runs`: the analysis record of a session and what is computed across its calibration runs.
- `inputs`: the start-up model, model sources, calibration specs and uploaded files.
- `exports`: the export folder, what an export wrote, and the figures its manifest records.
- `width_view`: summaries of neuron scores for the Width pruning page.
- `errors`: the one-line message of a user error, and the log of internal errors.
"""
