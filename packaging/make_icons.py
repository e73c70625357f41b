"""Render the app icon's SVG source to the PNG sizes desktops ask for, and a Windows .ico.

    python packaging/make_icons.py      # writes resources/icons/simclr-studio-{16..512}.png and .ico
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

from PySide6.QtCore import QRectF, Qt
from PySide6.QtGui import QGuiApplication, QImage, QPainter
from PySide6.QtSvg import QSvgRenderer

ICONS = Path(__file__).resolve().parent.parent / "resources" / "icons"
SIZES = (16, 24, 32, 48, 64, 128, 256, 512)


def render(renderer: QSvgRenderer, size: int) -> QImage:
    image = QImage(size, size, QImage.Format.Format_ARGB32_Premultiplied)
    image.fill(Qt.GlobalColor.transparent)
    painter = QPainter(image)
    painter.setRenderHint(QPainter.RenderHint.Antialiasing)
    renderer.render(painter, QRectF(0, 0, size, size))
    painter.end()
    return image


def main() -> int:
    _app = QGuiApplication.instance() or QGuiApplication(sys.argv[:1])  # Qt needs it alive while rendering
    renderer = QSvgRenderer(str(ICONS / "simclr-studio.svg"))
    if not renderer.isValid():
        print("cannot read the SVG icon", file=sys.stderr)
        return 1
    for size in SIZES:
        out = ICONS / f"simclr-studio-{size}.png"
        if not render(renderer, size).save(str(out)):
            print(f"cannot write {out}", file=sys.stderr)
            return 1
        print(out)
    ico = ICONS / "simclr-studio.ico"
    if render(renderer, 256).save(str(ico), "ICO"):
        print(ico)
    else:
        print("note: this Qt has no ICO writer; the Windows build needs simclr-studio.ico", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
