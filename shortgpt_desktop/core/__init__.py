"""The engine: loading, calibration, scoring, pruning, saving, evaluation. Never imports Qt.

Folders: :mod:`.model` (what the model is and costs), :mod:`.measure` (text, scores, perplexity), :mod:`.cut`
(which layers go, surgery, repair, healing), :mod:`.formats` (readers and writers), :mod:`.backends` (how the
opened model runs: whole in memory, or one layer at a time), :mod:`.testing` (random models built offline).
:mod:`.engine` holds a job's state and runs its steps.
"""
