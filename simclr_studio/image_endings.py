"""Does an image file end where its format says it should? A JPEG or PNG cut short (an interrupted
copy or download) has a fine header but fails training's full decode; the folder scan asks this
instead, from the file's last KiB in the usual case."""

from __future__ import annotations

from typing import IO

from PIL import ImageFile

_TAIL_BYTES = 1024  # an end marker behind a little padding is still in the last KiB
# How a JPEG or PNG ends (the end marker; the IEND chunk and its constant CRC), and the marker to search.
_ENDINGS = {"JPEG": (b"\xff\xd9", b"\xff\xd9"), "MPO": (b"\xff\xd9", b"\xff\xd9"), "PNG": (b"IEND\xaeB`\x82", b"IEND")}


def _found_after(fp: IO[bytes], start: int, marker: bytes) -> bool:
    fp.seek(start)
    carry = b""
    while block := fp.read(1 << 20):  # in chunks: a motion photo's video may be large
        if marker in carry + block:
            return True
        carry = block[1 - len(marker):]
    return False


def _jpeg_data_start(fp: IO[bytes]) -> int:
    """Where a JPEG's first scan begins (0 if its markers cannot be followed): an end marker before it
    belongs to a header, such as the EXIF thumbnail of every camera photo."""
    fp.seek(2)
    for _ in range(1000):
        head = fp.read(4)
        if len(head) < 4 or head[0] != 0xFF:
            return 0
        if head[1] == 0xFF:  # a fill byte before the marker
            fp.seek(-3, 1)
        elif head[1] == 0xDA:  # start of scan: entropy-coded data follows its header
            return fp.tell() - 2 + int.from_bytes(head[2:], "big")
        else:
            fp.seek(int.from_bytes(head[2:], "big") - 2, 1)
    return 0


def ends_whole(im: ImageFile.ImageFile, size: int) -> bool | None:
    """True when the opened JPEG or PNG (``size`` bytes) ends with its end marker, or is another format;
    False for a JPEG without it (libjpeg fails even with only the last byte missing); None for a PNG
    without IEND, which PIL still decodes when it is cut just after its pixel data: only a decode can tell."""
    ending, marker = _ENDINGS.get(im.format or "", (b"", b""))
    fp = im.fp
    if not ending or not im.tile or fp is None:
        return True
    fp.seek(max(0, size - _TAIL_BYTES))
    if fp.read().rstrip(b"\0").endswith(ending):  # the usual case, decided by one read
        return True
    if im.format != "PNG":
        # Bytes appended after the end marker (a phone's motion photo: a video) hide it from the tail,
        # so search the whole image.
        return _found_after(fp, _jpeg_data_start(fp), marker)
    if _found_after(fp, max(im.tile[0][2], size - _TAIL_BYTES), marker):
        return True  # IEND followed by other bytes
    return None
