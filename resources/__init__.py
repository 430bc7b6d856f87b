"""Files the application ships with: the icon (SVG and PNG renderings) and the Linux desktop entry.

Load them with :mod:`importlib.resources` (``files("shortgpt_desktop.resources")``); in a source checkout this
folder is mapped onto that package name (see pyproject.toml), and :mod:`shortgpt_desktop.gui.icons` also finds
it beside the package.
"""
