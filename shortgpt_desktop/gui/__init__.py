"""The desktop window (Qt). The engine it drives is :mod:`shortgpt_desktop.core`, which never imports Qt.

Modules: :mod:`.main_window` wires the panels (:mod:`.model_panel`, :mod:`.calibration_panel`,
:mod:`.settings_panel`, :mod:`.chart`, :mod:`.plan_panel`, :mod:`.compare_panel`, :mod:`.log_panel`) to
jobs run by :mod:`.workers` over the engine (:class:`shortgpt_desktop.core.engine.Engine`). The window only
displays the engine's state and passes on what the user asks for.
"""
