"""Exporting a trained encoder (state_dict .pt / .safetensors / ONNX) and embeddings (.npz / CSV).

Backbone state_dict keys match torchvision's ResNet with ``fc`` removed, so the weights load into
plain ``torchvision.models.resnet18()`` (with the small stem applied when the metadata says so).
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from simclr_studio import __version__
from simclr_studio.atomic import atomic_torch_save, atomic_write, atomic_write_bytes, atomic_write_text
from simclr_studio.augment import IMAGENET_MEAN, IMAGENET_STD
from simclr_studio.trained import TrainedModel

FORMATS = ("pt", "safetensors", "onnx")


def metadata(run: TrainedModel) -> dict:
    """What rebuilding the encoder needs (the README's recipe reads these keys): for a ResNet, whether
    the small stem is used; for the small CNNs, their stage widths (``small_stem`` is then null)."""
    from simclr_studio.model import SMALL_CNN_WIDTHS

    cfg = run.config
    cnn = cfg.backbone in SMALL_CNN_WIDTHS
    return {
        "producer": f"simclr-studio {__version__}",
        "backbone": cfg.backbone,
        "small_stem": None if cnn else cfg.resolved_small_stem(),
        **({"widths": list(SMALL_CNN_WIDTHS[cfg.backbone])} if cnn else {}),
        "feature_dim": run.model.feature_dim,
        "image_size": cfg.image_size,
        "input": "RGB float in [0, 1], normalised with mean/std below, NCHW",
        "mean": list(IMAGENET_MEAN),
        "std": list(IMAGENET_STD),
        "epoch": run.epoch,
        "global_step": run.global_step,
        "checkpoint": str(run.checkpoint),
    }


def backbone_state_dict(run: TrainedModel) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().contiguous() for k, v in run.model.backbone.state_dict().items()}


def export_weights(run: TrainedModel, fmt: str, out: str | Path) -> list[Path]:
    """Write the encoder in ``fmt`` to ``out`` plus ``out.json`` metadata; returns the files written."""
    out = Path(out)
    meta = metadata(run)
    if fmt == "pt":
        atomic_torch_save(backbone_state_dict(run), out)
    elif fmt == "safetensors":
        from safetensors.torch import save

        atomic_write_bytes(out, save(backbone_state_dict(run), metadata={k: json.dumps(v) for k, v in meta.items()}))
    elif fmt == "onnx":
        export_onnx(run, out)
    else:
        raise ValueError(f"unknown export format {fmt!r}; choose one of {', '.join(FORMATS)}")
    meta_path = out.with_name(out.name + ".json")
    atomic_write_text(meta_path, json.dumps({**meta, "format": fmt}, indent=2) + "\n")
    return [out, meta_path]


def export_onnx(run: TrainedModel, out: Path) -> None:
    """ONNX graph of the encoder: input 'images' [N, 3, S, S] (normalised), output 'features' [N, D]."""
    import copy
    import warnings

    model = copy.deepcopy(run.model.backbone).cpu().eval()  # a copy: the app may be using the model on a GPU
    size = run.config.image_size
    dummy = torch.zeros(2, 3, size, size)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        atomic_write(out, lambda tmp: torch.onnx.export(
            model, (dummy,), str(tmp), input_names=["images"], output_names=["features"],
            dynamic_axes={"images": {0: "batch"}, "features": {0: "batch"}}, opset_version=17, dynamo=False))


# Cells starting with these are formulas to a spreadsheet (OWASP "CSV injection"): quoted with a leading '.
_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def _readable(text: str) -> str:
    """A file name as text that encodes: bytes that were not UTF-8 (surrogate-escaped by the OS
    layer) written as \\xNN escapes instead of failing the whole file."""
    try:
        raw = text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:  # a lone surrogate that is no escaped byte
        return text.encode("utf-8", "backslashreplace").decode("utf-8")
    return raw.decode("utf-8", "backslashreplace")


def csv_cell(text: str) -> str:
    """A text cell safe to open in a spreadsheet: readable, and never a formula."""
    text = _readable(text)
    return "'" + text if text.startswith(_FORMULA_STARTS) else text


def write_csv(out: str | Path, header: Sequence[str], rows: Iterable[Sequence[object]],
              overwrite: bool = False) -> Path:
    """A CSV file, atomically: CRLF lines (RFC 4180, so a name with a newline or CR is quoted and reads
    back with ``csv.reader`` opened with ``newline=""``). An existing file is replaced only with
    ``overwrite`` (FileExistsError, one line). Callers pass text cells through ``csv_cell``."""
    out = Path(out)
    if out.exists() and not overwrite:
        raise FileExistsError(f"{out} already exists: choose another file, or overwrite it")
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\r\n")
    writer.writerow(header)
    writer.writerows(rows)
    atomic_write_text(out, buf.getvalue())
    return out


def save_embeddings(out: str | Path, features: np.ndarray, paths: Sequence[str], labels: Sequence[int],
                    classes: Sequence[str], coords: np.ndarray | None = None) -> Path:
    """Embeddings as .npz (features, paths, labels, classes[, coords]) or .csv (one row per image).

    The CSV is ``write_csv``'s (an existing file is replaced); path and class cells go through
    ``csv_cell``. The .npz keeps the names as they are."""
    out = Path(out)
    label_ids = np.asarray(labels, dtype=np.int64)
    if out.suffix.lower() == ".csv":
        header = ["path", "label", "class"] + (["x", "y"] if coords is not None else [])

        def row(i: int, path: str) -> list[object]:
            cls = classes[label_ids[i]] if label_ids[i] >= 0 and len(classes) else ""
            xy = [f"{coords[i, 0]:.6g}", f"{coords[i, 1]:.6g}"] if coords is not None else []
            return [csv_cell(str(path)), int(label_ids[i]), csv_cell(str(cls)), *xy, *(f"{v:.7g}" for v in features[i])]

        write_csv(out, header + [f"f{i}" for i in range(features.shape[1])],
                  (row(i, path) for i, path in enumerate(paths)), overwrite=True)
    else:
        if out.suffix.lower() != ".npz":
            out = out.with_suffix(out.suffix + ".npz") if out.suffix else out.with_suffix(".npz")
        arrays: dict[str, Any] = dict(features=features.astype(np.float32), paths=np.asarray(paths, dtype=str),
                                      labels=label_ids, classes=np.asarray(list(classes), dtype=str))
        if coords is not None:
            arrays["coords"] = coords.astype(np.float32)

        def write(tmp: Path) -> None:
            with open(tmp, "wb") as f:
                np.savez(f, **arrays)

        atomic_write(out, write)
    return out
