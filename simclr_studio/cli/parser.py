"""The command line's parser: every subcommand and flag, the train flags in groups (as timm's train.py).

A config file sets the defaults (timm style): ``train --config FILE.json`` is read first, its values
become the defaults of the flags that name run settings, and the real parse lets the flags typed on
the command line win. Those typed flags are also noted in ``args.given``: the rules that depend on
what was asked (``--epochs`` alone drops a time budget, a resume names what it ignores) read it.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable, Sequence
from typing import Any, TypeAlias

from simclr_studio import __version__

# Flags that are RunConfig fields of the same name: a config file gives their defaults.
RUN_SETTINGS = ("epochs", "minutes", "batch_size", "backbone", "image_size", "weights", "optimizer", "lr",
                "temperature", "seed", "device", "num_workers", "tensorboard")


class Given(argparse.Action):
    """Stores a flag's value (as "store" does) and notes its name in ``given``: so the flags typed on
    the command line are told apart from defaults that came from a config file."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
                 values: str | Sequence[Any] | None, option_string: str | None = None) -> None:
        setattr(namespace, self.dest, values)
        namespace.given = frozenset(getattr(namespace, "given", frozenset())) | {self.dest}


class GivenTrue(Given):
    """An on/off flag noted in ``given``; its default stays None so that a config file's value shows through."""

    def __init__(self, option_strings: Sequence[str], dest: str, **kwargs: Any) -> None:
        super().__init__(option_strings, dest, nargs=0, **kwargs)

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
                 values: str | Sequence[Any] | None, option_string: str | None = None) -> None:
        setattr(namespace, self.dest, True)
        namespace.given = frozenset(getattr(namespace, "given", frozenset())) | {self.dest}


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def positive_float(text: str) -> float:
    value = float(text)
    if not (value > 0 and math.isfinite(value)):
        raise argparse.ArgumentTypeError(f"must be above 0, got {text}")
    return value


def non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {value}")
    return value


def device_name(text: str) -> str:
    from simclr_studio.config import DEVICES

    if text in DEVICES or (text.startswith("cuda:") and text[5:].isdigit()):
        return text
    raise argparse.ArgumentTypeError(f"choose from {', '.join(DEVICES)} or cuda:N, not {text!r}")


# ---- the config file ------------------------------------------------------------------------------
def config_file_defaults(argv: Sequence[str]) -> dict[str, Any]:
    """The train flags' defaults from ``--config FILE.json``; none without one, or for ``--resume``
    (a resumed run keeps its saved config). A malformed file raises ConfigError."""
    if list(argv[:1]) != ["train"]:
        return {}
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--config")
    pre.add_argument("--resume", action="store_true")
    known, _ = pre.parse_known_args(argv[1:])
    if not known.config or known.resume:
        return {}
    from simclr_studio.config import ConfigError, RunConfig

    cfg = RunConfig.load(known.config)
    try:
        device_name(cfg.device)  # a default that is a string is parsed as if typed: fail as a config error
    except argparse.ArgumentTypeError as exc:
        raise ConfigError(f"config value device: {exc}") from None
    return {name: getattr(cfg, name) for name in RUN_SETTINGS}


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    """Parse a command line: a config file's values first, as defaults; then the flags, which win."""
    args = build_parser(config_file_defaults(argv)).parse_args(list(argv))
    args.argv = list(argv)
    return args


# ---- the parser -----------------------------------------------------------------------------------
Subparsers: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"


def build_parser(train_defaults: dict[str, Any] | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="simclr-studio",
                                     description="Train SimCLR encoders on your own image folders.")
    parser.add_argument("--version", action="version", version=f"simclr-studio {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    add_train_parser(sub, train_defaults or {})
    add_embed_parser(sub)
    add_eval_parser(sub)
    add_export_parser(sub)
    add_curate_parser(sub)
    return parser


def add_train_parser(sub: Subparsers, defaults: dict[str, Any]) -> None:
    from simclr_studio.cli.train import cmd_train

    t = sub.add_parser("train", help="train a SimCLR encoder on an image folder",
                       description="Train a SimCLR encoder. Ctrl-C saves a checkpoint; --resume continues. "
                                   "Without --config the default recipe for the folder and device is used; "
                                   "flags given always win.")
    data = t.add_argument_group("data")
    data.add_argument("data_dir", nargs="?", metavar="DATA_DIR",
                      help="folder of images (class subfolders optional); optional when the config file names one")
    data.add_argument("--demo", action="store_true", help="train on the bundled demo images")

    config = t.add_argument_group("config file", "its values are the defaults of the flags below")
    config.add_argument("--config", action=Given, metavar="FILE.json", help="a saved config.json to start from")

    length = t.add_argument_group("run length")
    length.add_argument("--minutes", type=float, action=Given, metavar="M",
                        help="train for M minutes: the run measures its speed and lays its schedule over the time")
    length.add_argument("--epochs", type=int, action=Given, help="train for this many epochs instead of a time budget")

    _add_model_flags(t.add_argument_group("model"))
    _add_optimisation_flags(t.add_argument_group("optimisation"))

    augment = t.add_argument_group("augmentation")
    augment.add_argument("--mask", type=float, action=Given, metavar="P",
                         help="probability of the mask-box augmentation")

    _add_process_flags(t.add_argument_group("device and processes"))

    output = t.add_argument_group("output")
    output.add_argument("--out", required=True, metavar="RUN_DIR", help="run folder for config, checkpoints and events")
    output.add_argument("--resume", action="store_true", help="continue the run in RUN_DIR from its last checkpoint")
    output.add_argument("--overwrite", action="store_true",
                        help="start a new run in RUN_DIR even though it holds one: the old run is moved aside "
                             "to RUN_DIR.old-DATE-TIME, never deleted")
    output.add_argument("--quiet", action="store_true", help="no progress bars")
    output.add_argument("--link", action="store_true", help=argparse.SUPPRESS)  # the app's link: see training_link
    monitoring = t.add_argument_group("monitoring")
    monitoring.add_argument("--tensorboard", action=GivenTrue,
                            help="also write TensorBoard event files to RUN_DIR/tensorboard/ "
                                 "(view them with: tensorboard --logdir RUN_DIR)")
    t.set_defaults(func=cmd_train, given=frozenset(), **defaults)


def _add_model_flags(group: argparse._ArgumentGroup) -> None:
    from simclr_studio.config import BACKBONES

    group.add_argument("--backbone", action=Given,
                       help=f"{', '.join(BACKBONES)} or auto (resnet18 on a GPU, small-cnn on a CPU)")
    group.add_argument("--image-size", type=int, action=Given, dest="image_size")
    group.add_argument("--weights", action=Given, metavar="FILE",
                       help="initialise the backbone from a local weights file")


def _add_optimisation_flags(group: argparse._ArgumentGroup) -> None:
    from simclr_studio.config import OPTIMIZERS

    group.add_argument("--batch-size", type=int, action=Given, dest="batch_size")
    group.add_argument("--optimizer", choices=OPTIMIZERS, action=Given)
    group.add_argument("--lr", type=float, action=Given,
                       help="peak learning rate (default: the recipe's, see the README)")
    group.add_argument("--temperature", type=float, action=Given)
    group.add_argument("--seed", type=int, action=Given)


def _add_process_flags(group: argparse._ArgumentGroup) -> None:
    group.add_argument("--device", type=device_name, action=Given, metavar="DEVICE",
                       help="auto (cuda > mps > cpu), cpu, cuda, cuda:N or mps")
    group.add_argument("--num-workers", type=int, action=Given, dest="num_workers",
                       help="loader processes when not cached in RAM")
    group.add_argument("--nproc", type=positive_int, default=1, metavar="K",
                       help="train data-parallel in K processes on this machine (one per GPU) through torchrun; "
                            "for several machines run torchrun yourself (see the README)")


def _add_run_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("run_dir", metavar="RUN_DIR")
    p.add_argument("--checkpoint", help="a checkpoint file of the run (default: the latest)")


def _add_feature_args(p: argparse.ArgumentParser) -> None:
    group = p.add_argument_group("device")
    group.add_argument("--batch-size", type=positive_int, default=256, dest="batch_size")
    group.add_argument("--device", type=device_name, default="auto", metavar="DEVICE",
                       help="auto, cpu, cuda, cuda:N or mps")
    group.add_argument("--quiet", action="store_true")


def _command(sub: Subparsers, name: str, func: Callable[[argparse.Namespace], int],
             summary: str) -> argparse.ArgumentParser:
    p: argparse.ArgumentParser = sub.add_parser(name, help=summary)
    p.set_defaults(func=func)
    return p


def add_embed_parser(sub: Subparsers) -> None:
    from simclr_studio.cli.features import cmd_embed
    from simclr_studio.projection import TSNE_ITERATIONS, TSNE_PERPLEXITY

    e = _command(sub, "embed", cmd_embed, "compute encoder features for a folder")
    _add_run_args(e)
    e.add_argument("data_dir", metavar="DATA_DIR")
    e.add_argument("--out", required=True, metavar="FEATURES.npz", help=".npz or .csv")
    e.add_argument("--map", choices=("none", "pca", "tsne"), default="none",
                   help="also store 2-D map coordinates (x, y columns in CSV, 'coords' in .npz)")
    e.add_argument("--perplexity", type=positive_float, default=TSNE_PERPLEXITY,
                   help="t-SNE perplexity (--map tsne)")
    e.add_argument("--tsne-iterations", type=positive_int, default=TSNE_ITERATIONS, dest="tsne_iterations", metavar="N",
                   help="t-SNE optimisation steps (--map tsne)")
    _add_feature_args(e)


def add_eval_parser(sub: Subparsers) -> None:
    from simclr_studio.cli.features import cmd_eval

    v = _command(sub, "eval", cmd_eval, "kNN and linear-probe accuracy on frozen features (needs class subfolders)")
    _add_run_args(v)
    v.add_argument("data_dir", metavar="DATA_DIR")
    v.add_argument("--test-dir", metavar="DIR", help="held-out folder with the same classes (default: 80/20 split)")
    v.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    _add_feature_args(v)


def add_export_parser(sub: Subparsers) -> None:
    from simclr_studio.cli.features import cmd_export

    x = _command(sub, "export", cmd_export, "export the trained encoder weights")
    _add_run_args(x)
    x.add_argument("--format", choices=("pt", "safetensors", "onnx"), required=True)
    x.add_argument("--out", required=True, metavar="PATH")


def add_curate_parser(sub: Subparsers) -> None:
    from simclr_studio.cli.curate import DEFAULT_MISLABELS, DEFAULT_OUTLIERS, OUTLIER_SHARE, cmd_curate
    from simclr_studio.duplicates import DEFAULT_DUPLICATE_THRESHOLD

    c = _command(sub, "curate", cmd_curate,
                 "report near-duplicates, outliers and likely mislabeled images as CSV (kind,group,path,score)")
    c.description = (
        "Embed DATA_DIR with the run's encoder and write REPORT.csv, one row per finding, columns "
        "kind,group,path,score. duplicate: group numbers a group of near-duplicates (largest first), score = "
        "similarity to the group's first image (the highest of the features' cosine, the pixel signatures' "
        "and crop similarity); outlier: group = rank, score = 1 - mean similarity to "
        "the 10 nearest images (higher = more unusual); mislabel (with class subfolders): group = "
        "'folder class→neighbours' vote', score = the vote's confidence.")
    _add_run_args(c)
    c.add_argument("data_dir", metavar="DATA_DIR")
    c.add_argument("--out", required=True, metavar="REPORT.csv", help="the report: one row per finding")
    c.add_argument("--overwrite", action="store_true", help="replace REPORT.csv when it exists")
    c.add_argument("--duplicates", type=float, default=DEFAULT_DUPLICATE_THRESHOLD, metavar="T",
                   help=f"group images whose similarity is at least T (default {DEFAULT_DUPLICATE_THRESHOLD})")
    c.add_argument("--outliers", type=non_negative_int, metavar="N",
                   help=f"list the N most unusual images (default {DEFAULT_OUTLIERS}, at most "
                        f"{OUTLIER_SHARE * 100:g}%% of the folder; 0: none)")
    c.add_argument("--mislabels", type=non_negative_int, default=DEFAULT_MISLABELS, metavar="N",
                   help=f"with class subfolders, list at most N likely mislabeled images, most confident "
                        f"first (default {DEFAULT_MISLABELS}; 0: none)")
    _add_feature_args(c)
