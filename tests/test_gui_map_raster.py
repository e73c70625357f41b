"""Big maps' dots are drawn as one image (gui/map_raster.py): the same colours where the points are,
hidden classes left out, and the class layers no longer paint themselves; small maps keep
pyqtgraph's own symbols. Moved points are framed with hidden classes included."""

import numpy as np
import pytest

from simclr_studio.gui.map_raster import RASTER_MIN_POINTS, disc, premultiplied
from simclr_studio.gui.map_view import PALETTE, MapView


def test_a_disc_is_round_and_centred():
    dy, dx = disc(5)
    assert len(dy) == 21 and dy.sum() == 0 and dx.sum() == 0 and max(abs(dx)) == 2
    assert len(disc(1)[0]) == 1
    assert len(disc(4)[0]) in (12, 16)
    assert premultiplied((255, 0, 0, 255)) == 0xFFFF0000 and premultiplied((0, 0, 255, 128)) == 0x80000080


def colour_counts(image, colour: tuple[int, int, int], alpha: int = 200) -> np.ndarray:
    """Per column third, how many pixels show ``colour`` drawn at ``alpha`` over the white background."""
    ptr = image.constBits()
    rgba = np.frombuffer(ptr, np.uint8).reshape(image.height(), image.bytesPerLine() // 4, 4)[:, : image.width()]
    expected = np.array(colour) * alpha / 255 + 255 * (1 - alpha / 255)
    bgr = rgba[..., 2::-1].astype(float)  # ARGB32 in memory is B, G, R, A
    match = np.abs(bgr - expected).max(-1) <= 3
    thirds = np.array_split(np.arange(image.width()), 3)
    return np.array([match[:, cols].sum() for cols in thirds])


@pytest.mark.parametrize("n", [RASTER_MIN_POINTS + 1000, 600])
def test_big_and_small_maps_show_each_class_where_its_points_are(qtbot, n):
    from PySide6.QtGui import QImage

    view = MapView()
    qtbot.addWidget(view)
    view.resize(600, 400)
    view.legend.hide()  # its samples would show both colours in a corner
    rng = np.random.default_rng(0)
    groups = np.arange(n) % 2
    coords = np.c_[groups * 10 + rng.uniform(0, 1, n), rng.uniform(0, 1, n)].astype(np.float32)  # left, right
    view.set_points(coords, groups, ["left", "right"])
    assert all(layer.drawn_elsewhere == (n >= RASTER_MIN_POINTS) for layer in view.groups)
    image = view.render_image(600).convertToFormat(QImage.Format.Format_ARGB32)
    left, right = colour_counts(image, PALETTE[0]), colour_counts(image, PALETTE[1])
    assert left[0] > 100 and left[2] == 0, left
    assert right[2] > 100 and right[0] == 0, right
    view.groups[1].setVisible(False)  # as a click on its legend entry does
    image = view.render_image(600).convertToFormat(QImage.Format.Format_ARGB32)
    assert colour_counts(image, PALETTE[1]).sum() == 0 and colour_counts(image, PALETTE[0])[0] > 100
    view.move_points(coords[:, ::-1].copy())  # points move: the picture follows
    view.groups[1].setVisible(True)  # shown again: in view, though it was hidden when the points moved
    image = view.render_image(600).convertToFormat(QImage.Format.Format_ARGB32)
    assert colour_counts(image, PALETTE[1]).sum() > 100
