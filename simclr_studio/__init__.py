"""SIMCLR Studio: SimCLR self-supervised training on your own image folders.

The engine (everything in this package except the ``gui`` subpackage) never imports Qt.
"""

__version__ = "0.1.0"
