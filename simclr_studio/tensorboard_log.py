"""TensorBoard event files for a run, without TensorBoard: the TFRecord framing of hand-encoded
``Event`` protobufs holding scalar summaries, enough for TensorBoard to plot a run live.

Each record: uint64 length, masked CRC-32C of the length, the data, masked CRC-32C of the data.
"""

from __future__ import annotations

import os
import socket
import struct
import time
from pathlib import Path
from typing import Any

TENSORBOARD_DIR = "tensorboard"  # in the run folder, beside events.jsonl
FLUSH_INTERVAL_S = 2.0  # a live TensorBoard sees progress within seconds; a write per step would cost a syscall


def _crc32c_table() -> list[int]:
    table = []
    for n in range(256):
        crc = n
        for _ in range(8):
            crc = (crc >> 1) ^ 0x82F63B78 if crc & 1 else crc >> 1  # Castagnoli, reflected
        table.append(crc)
    return table


_TABLE = _crc32c_table()


def crc32c(data: bytes) -> int:
    crc = 0xFFFFFFFF
    for byte in data:  # records are short (~50 bytes): a table loop is fast enough
        crc = _TABLE[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def masked_crc(data: bytes) -> int:
    crc = crc32c(data)
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def _varint(value: int) -> bytes:
    value &= (1 << 64) - 1  # int64 as protobuf writes it (negative: ten bytes)
    out = bytearray()
    while True:
        low, value = value & 0x7F, value >> 7
        out.append(low | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _bytes_field(number: int, payload: bytes) -> bytes:
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def encode_event(wall_time: float, step: int, file_version: str | None = None,
                 scalars: dict[str, float] | None = None) -> bytes:
    """An ``Event``: wall_time (1, double), step (2, int64), file_version (3) or summary (5) of
    Summary.Value{tag (1), simple_value (2, float)} entries."""
    out = b"\x09" + struct.pack("<d", wall_time) + b"\x10" + _varint(step)
    if file_version is not None:
        out += _bytes_field(3, file_version.encode())
    if scalars:
        values = b"".join(_bytes_field(1, _bytes_field(1, tag.encode()) + b"\x15" + struct.pack("<f", value))
                          for tag, value in scalars.items())
        out += _bytes_field(5, values)
    return out


def frame(data: bytes) -> bytes:
    length = struct.pack("<Q", len(data))
    return length + struct.pack("<I", masked_crc(length)) + data + struct.pack("<I", masked_crc(data))


class EventFileWriter:
    """One ``events.out.tfevents.*`` file in ``log_dir`` (a new one per session: a resumed run adds a
    file, and TensorBoard reads them all as one run)."""

    def __init__(self, log_dir: str | Path):
        self.log_dir = Path(log_dir)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        now = time.time()
        name = f"events.out.tfevents.{int(now):010d}.{socket.gethostname()}.{os.getpid()}.simclr"
        self.path = self.log_dir / name
        self._file = open(self.path, "ab")
        self._last_flush = 0.0
        self._file.write(frame(encode_event(now, 0, file_version="brain.Event:2")))
        self.flush()

    def add_scalars(self, step: int, scalars: dict[str, float], wall_time: float | None = None) -> None:
        self._file.write(frame(encode_event(time.time() if wall_time is None else wall_time, step, scalars=scalars)))
        if time.monotonic() - self._last_flush >= FLUSH_INTERVAL_S:
            self.flush()

    def flush(self) -> None:
        self._file.flush()
        self._last_flush = time.monotonic()

    def close(self) -> None:
        self._file.close()


def scalars_of(event: Any) -> tuple[int, dict[str, float]] | None:
    """(step, scalars) that a progress event shows in TensorBoard: per step the raw loss, the learning
    rate and images/s; per epoch (1-based, as the app shows it) the mean loss and the kNN accuracy."""
    if event.kind == "step":
        return event.global_step, {"train/loss": event.loss, "train/lr": event.lr,
                                   "train/images_per_s": event.images_per_s}
    if event.kind == "epoch":
        return event.epoch + 1, {"epoch/loss": event.loss}
    if event.kind == "eval":
        return event.epoch + 1, {"epoch/knn_accuracy": event.knn_accuracy}
    if event.kind == "baseline":
        return 0, {"epoch/knn_accuracy_raw_pixels": event.knn_accuracy}
    return None


class TensorBoardLog:
    """Writes a run's progress events as TensorBoard scalars (``RUN_DIR/tensorboard/``)."""

    def __init__(self, log_dir: str | Path):
        self.writer = EventFileWriter(log_dir)

    def write(self, event: Any) -> None:
        found = scalars_of(event)
        if found is not None:
            self.writer.add_scalars(found[0], found[1], wall_time=event.time)
        if event.kind in ("epoch", "eval", "finished"):  # the moments worth seeing at once
            self.writer.flush()

    def close(self) -> None:
        self.writer.close()
