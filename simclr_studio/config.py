"""The one dataclass that describes a run. It is saved as ``config.json`` beside the checkpoints."""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

BACKBONES = ("resnet18", "resnet34", "resnet50", "small-cnn", "tiny-cnn")
OPTIMIZERS = ("lars", "sgd", "adamw")
MASK_FILLS = ("zero", "noise", "mean")
BLEND_SOURCES = ("noise", "image")
DEVICES = ("auto", "cpu", "cuda", "mps")
MAX_IMAGE_SIZE = 1024  # the app's largest: a batch of 5,000² images would not fit in RAM
MAX_SEED = 2**64 - 1  # torch.manual_seed's range
MAX_IMAGE_PIXELS_CEILING = 1_000_000_000  # max_image_pixels above this: a single decode of 4 GB and more

# lr = base × global_batch / 256 (Goyal et al. linear scaling, as in the SimCLR paper).
BASE_LR = {"lars": 0.3, "sgd": 0.06, "adamw": 1e-3}
WEIGHT_DECAY = {"lars": 1e-6, "sgd": 5e-4, "adamw": 1e-4}


class ConfigError(ValueError):
    """A configuration value is invalid; the message says which and why."""


def _coerce(name: str, value: Any, annotation: str) -> Any:
    """Check a JSON value against a field's annotation (e.g. "float | None"); ints are accepted as floats."""
    for option in (a.strip() for a in annotation.split("|")):
        if option == "None" and value is None:
            return None
        if option == "bool" and isinstance(value, bool):
            return value
        if option == "int" and isinstance(value, int) and not isinstance(value, bool):
            return value
        if option == "float" and isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if option == "str" and isinstance(value, str):
            return value
        if (option.startswith("tuple") and isinstance(value, (list, tuple)) and len(value) == 2
                and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)):
            return (float(value[0]), float(value[1]))
    raise ConfigError(f"config value {name} must be {annotation.replace('tuple[float, float]', 'a [low, high] pair')}, "
                      f"got {value!r}")


def _check_finite(obj: Any, prefix: str = "") -> None:
    """Every float (and float pair) field of a config dataclass must be a finite number."""
    for f in fields(obj):
        value = getattr(obj, f.name)
        values = value if isinstance(value, tuple) else (value,)
        if any(isinstance(v, float) and not math.isfinite(v) for v in values):
            raise ConfigError(f"{prefix}{f.name} must be a finite number, got {value}")


def _build(cls, data: Any, prefix: str = ""):
    if not isinstance(data, dict):
        raise ConfigError(f"config {prefix.rstrip('.') or 'file'} must be a JSON object, got {type(data).__name__}")
    annotations = {f.name: str(f.type) for f in fields(cls)}
    unknown = set(data) - set(annotations)
    if unknown:
        raise ConfigError(f"unknown config keys: {', '.join(prefix + k for k in sorted(unknown))}")
    return {k: _coerce(prefix + k, v, annotations[k]) for k, v in data.items()}


@dataclass
class AugmentConfig:
    """SimCLR view augmentations plus masking. Defaults are the paper's, scaled by ``for_image_size``."""

    crop_scale: tuple[float, float] = (0.08, 1.0)
    crop_ratio: tuple[float, float] = (3 / 4, 4 / 3)
    flip_p: float = 0.5
    jitter_p: float = 0.8
    jitter_strength: float = 1.0  # s: brightness/contrast/saturation 0.8·s, hue 0.2·s
    grayscale_p: float = 0.2
    blur_p: float = 0.5
    blur_sigma: tuple[float, float] = (0.1, 2.0)
    # Masking: an erased box, and a blend X' = (1-α)·X + α·M with a random mask image M.
    mask_p: float = 0.0
    mask_scale: tuple[float, float] = (0.02, 0.25)  # box area as a fraction of the image
    mask_ratio: tuple[float, float] = (0.3, 3.3)
    mask_fill: str = "zero"
    blend_p: float = 0.0
    blend_alpha: tuple[float, float] = (0.1, 0.4)
    blend_source: str = "noise"  # "noise": M is uniform noise; "image": M is another image of the batch

    @classmethod
    def for_image_size(cls, image_size: int, **overrides: Any) -> AugmentConfig:
        """Paper defaults; for small images (≤64 px) colour strength 0.5 and no blur, as in the paper's CIFAR setup."""
        small = image_size <= 64
        base = cls(jitter_strength=0.5 if small else 1.0, blur_p=0.0 if small else 0.5)
        return dataclasses.replace(base, **overrides)

    @classmethod
    def masking_only(cls) -> AugmentConfig:
        """Only the masking augmentations (the method of the document this product grew from)."""
        return cls(crop_scale=(1.0, 1.0), crop_ratio=(1.0, 1.0), flip_p=0.0, jitter_p=0.0,
                   grayscale_p=0.0, blur_p=0.0, mask_p=1.0, blend_p=0.5)

    def validate(self) -> None:
        _check_finite(self, "augment.")
        for name in ("flip_p", "jitter_p", "grayscale_p", "blur_p", "mask_p", "blend_p"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ConfigError(f"augment.{name} must be a probability in [0, 1], got {value}")
        for name in ("crop_scale", "crop_ratio", "blur_sigma", "mask_scale", "mask_ratio", "blend_alpha"):
            lo, hi = getattr(self, name)
            if not 0 < lo <= hi and not (name == "blend_alpha" and 0 <= lo <= hi):
                raise ConfigError(f"augment.{name} must be a range 0 < low <= high, got {(lo, hi)}")
        if self.crop_scale[1] > 1 or self.mask_scale[1] > 1 or self.blend_alpha[1] > 1:
            raise ConfigError("augment crop_scale, mask_scale and blend_alpha must not exceed 1")
        if self.jitter_strength < 0:
            raise ConfigError("augment.jitter_strength must be >= 0")
        if self.mask_fill not in MASK_FILLS:
            raise ConfigError(f"augment.mask_fill must be one of {MASK_FILLS}, got {self.mask_fill!r}")
        if self.blend_source not in BLEND_SOURCES:
            raise ConfigError(f"augment.blend_source must be one of {BLEND_SOURCES}, got {self.blend_source!r}")


class _AugmentForImageSize(AugmentConfig):
    """A RunConfig's augment when none is given: replaced by AugmentConfig.for_image_size(image_size)."""


@dataclass
class RunConfig:
    """Everything that defines a training run."""

    data_dir: str = ""
    backbone: str = "auto"  # "auto": resnet18 on a GPU, small-cnn on a CPU
    small_stem: bool | None = None  # None: 3×3 stride-1 stem without max-pool when image_size <= 64
    weights: str | None = None  # optional local weights file for the backbone
    image_size: int = 32
    proj_hidden_dim: int | None = None  # None: the backbone's feature dimension (paper)
    proj_out_dim: int = 128
    epochs: int = 100
    minutes: float | None = None  # a time budget: the schedule is laid over it and ``epochs`` is ignored
    batch_size: int = 256
    optimizer: str = "lars"
    lr: float | None = None  # None: BASE_LR[optimizer] × batch / 256
    weight_decay: float | None = None  # None: WEIGHT_DECAY[optimizer]
    momentum: float = 0.9
    warmup_epochs: float | None = None  # None: 10 (paper), or a tenth of the run when shorter than 100 epochs
    temperature: float = 0.5
    device: str = "auto"
    amp: bool = True  # mixed precision: on CUDA, and bf16 on CPUs with native bf16 (AVX512-BF16/AMX)
    sync_bn: bool = True  # several GPUs: batch-norm statistics over the global batch (paper); CUDA only
    channels_last: bool = True  # NHWC activations on CUDA and CPU (faster convolutions on both)
    seed: int = 0
    num_workers: int = 0  # DataLoader workers when the images do not fit the RAM cache
    cache_ram_gb: float = 4.0  # decode everything once into RAM when it fits this budget
    eval_every: int = 1  # online kNN accuracy every N epochs when labels exist (0: never)
    keep_checkpoints: int = 3  # per-epoch checkpoints kept besides last.pt
    tensorboard: bool = False  # also write TensorBoard event files to RUN_DIR/tensorboard/ (rank 0)
    # Images with more pixels are skipped (listed with the reason). None: data.MAX_IMAGE_PIXELS (64 MP).
    # A PNG or TIFF is decoded at full size (4 bytes a pixel with alpha) before it is shrunk.
    max_image_pixels: int | None = None
    augment: AugmentConfig = field(default_factory=_AugmentForImageSize)

    def __post_init__(self) -> None:
        if self.augment is None or isinstance(self.augment, _AugmentForImageSize):
            self.augment = AugmentConfig.for_image_size(self.image_size)

    @classmethod
    def suggested(cls, n_images: int, typical_side: int, device_type: str, grayscale: bool = False,
                  minutes: float | None = None) -> RunConfig:
        """The default recipe for a folder (see ``simclr_studio.recipe``)."""
        from simclr_studio.recipe import FolderFacts, suggest

        return suggest(FolderFacts(n_images, typical_side, grayscale), device_type, minutes).config

    # ---- derived values -------------------------------------------------------------------
    def resolved_small_stem(self) -> bool:
        return self.image_size <= 64 if self.small_stem is None else bool(self.small_stem)

    def resolved_lr(self, world_size: int = 1) -> float:
        if self.lr is not None:
            return float(self.lr)
        return BASE_LR[self.optimizer] * self.batch_size * world_size / 256

    def resolved_warmup_epochs(self) -> float:
        if self.warmup_epochs is not None:
            return float(self.warmup_epochs)
        return min(10.0, self.epochs / 10)

    def resolved_weight_decay(self) -> float:
        return WEIGHT_DECAY[self.optimizer] if self.weight_decay is None else float(self.weight_decay)

    def validate(self) -> None:
        _check_finite(self)
        if self.backbone not in BACKBONES + ("auto",):
            raise ConfigError(f"unknown backbone {self.backbone!r}; choose one of {', '.join(BACKBONES)}")
        if self.optimizer not in OPTIMIZERS:
            raise ConfigError(f"unknown optimizer {self.optimizer!r}; choose one of {', '.join(OPTIMIZERS)}")
        if self.device not in DEVICES and not self.device.startswith("cuda:"):
            raise ConfigError(f"unknown device {self.device!r}; choose one of {', '.join(DEVICES)}")
        if self.image_size < 16:
            raise ConfigError(f"image_size must be at least 16, got {self.image_size}")
        if self.image_size > MAX_IMAGE_SIZE:
            raise ConfigError(f"image_size must be at most {MAX_IMAGE_SIZE}, got {self.image_size}")
        if not 0 <= self.seed <= MAX_SEED:
            raise ConfigError(f"seed must be in [0, 2**64 - 1], got {self.seed}")
        if self.max_image_pixels is not None and not 1 <= self.max_image_pixels <= MAX_IMAGE_PIXELS_CEILING:
            raise ConfigError(f"max_image_pixels must be in [1, {MAX_IMAGE_PIXELS_CEILING:,}], "
                              f"got {self.max_image_pixels}")
        if self.batch_size < 2:
            raise ConfigError(f"batch_size must be at least 2 (each image needs negatives), got {self.batch_size}")
        if self.epochs < 1:
            raise ConfigError(f"epochs must be at least 1, got {self.epochs}")
        if self.minutes is not None and not (math.isfinite(self.minutes) and self.minutes > 0):
            raise ConfigError(f"minutes must be a positive number, got {self.minutes}")
        if self.temperature <= 0:
            raise ConfigError(f"temperature must be positive, got {self.temperature}")
        if self.warmup_epochs is not None and self.warmup_epochs < 0:
            raise ConfigError("warmup_epochs must be >= 0")
        if self.lr is not None and self.lr <= 0:
            raise ConfigError(f"lr must be positive, got {self.lr}")
        if self.weight_decay is not None and self.weight_decay < 0:
            raise ConfigError(f"weight_decay must be >= 0, got {self.weight_decay}")
        if not 0 <= self.momentum < 1:
            raise ConfigError(f"momentum must be in [0, 1), got {self.momentum}")
        for name in ("num_workers", "eval_every", "keep_checkpoints"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.cache_ram_gb < 0:
            raise ConfigError(f"cache_ram_gb must be >= 0, got {self.cache_ram_gb}")
        if self.proj_out_dim < 1 or (self.proj_hidden_dim is not None and self.proj_hidden_dim < 1):
            raise ConfigError("projection head dimensions must be positive")
        self.augment.validate()

    # ---- JSON -----------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunConfig:
        """Build from JSON data, checking every key and type (a ConfigError names the bad one)."""
        if not isinstance(data, dict):
            raise ConfigError(f"config must be a JSON object, got {type(data).__name__}")
        data = dict(data)
        augment = data.pop("augment", None)
        if augment is None:  # older configs: the default for their image size
            return cls(**_build(cls, data))
        if not isinstance(augment, AugmentConfig):
            augment = AugmentConfig(**_build(AugmentConfig, augment, "augment."))
        return cls(augment=augment, **_build(cls, data))

    @classmethod
    def load(cls, path: str | Path) -> RunConfig:
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
        except UnicodeDecodeError as exc:
            raise ConfigError(f"cannot read config {path}: not UTF-8 text "
                              f"(byte 0x{exc.object[exc.start]:02x} at position {exc.start})") from None
        except (OSError, json.JSONDecodeError) as exc:
            raise ConfigError(f"cannot read config {path}: {exc}") from exc
        return cls.from_dict(data)

    def save(self, path: str | Path) -> None:
        from simclr_studio.atomic import atomic_write_text

        atomic_write_text(Path(path), self.to_json() + "\n")
