"""The application icon, from the shipped resources; ``python -m shortgpt_desktop.gui.icons`` re-renders
``icon.png`` and ``icon.ico`` from ``icon.svg``."""

from __future__ import annotations

import importlib.resources
import sys
from pathlib import Path

from PySide6.QtCore import QSize
from PySide6.QtGui import QIcon, QImage, QPainter
from PySide6.QtSvg import QSvgRenderer

_CHECKOUT_RESOURCES = Path(__file__).resolve().parents[2] / "resources"


def resource_path(name: str) -> Path | None:
    """A shipped file: from the installed ``shortgpt_desktop.resources`` package, else the source checkout."""
    try:
        candidate = importlib.resources.files("shortgpt_desktop.resources") / name
        if candidate.is_file():
            return Path(str(candidate))
    except (ModuleNotFoundError, TypeError):
        pass
    frozen = Path(getattr(sys, "_MEIPASS", "")) / "shortgpt_desktop" / "resources" / name
    if getattr(sys, "frozen", False) and frozen.is_file():
        return frozen
    local = _CHECKOUT_RESOURCES / name
    return local if local.is_file() else None


def app_icon() -> QIcon:
    """The icon at every size: the SVG scales, the PNG is the fallback where SVG support is missing."""
    icon = QIcon()
    svg = resource_path("icon.svg")
    png = resource_path("icon.png")
    if svg is not None:
        icon.addFile(str(svg))
    if png is not None:
        icon.addFile(str(png), QSize(256, 256))
    return icon


def render_svg(svg: Path, size: int) -> QImage:
    image = QImage(size, size, QImage.Format.Format_ARGB32_Premultiplied)
    image.fill(0)
    painter = QPainter(image)
    painter.setRenderHint(QPainter.RenderHint.Antialiasing)
    QSvgRenderer(str(svg)).render(painter)
    painter.end()
    return image


def main() -> int:
    from PySide6.QtGui import QGuiApplication

    app = QGuiApplication.instance() or QGuiApplication(sys.argv[:1])  # noqa: F841 (painting needs an app)
    folder = _CHECKOUT_RESOURCES
    svg = folder / "icon.svg"
    render_svg(svg, 256).save(str(folder / "icon.png"))
    render_svg(svg, 256).save(str(folder / "icon.ico"))
    print(f"rendered {folder / 'icon.png'} and {folder / 'icon.ico'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
