"""The ``simclr-studio`` command: train, embed, eval and export from the shell.

Expected failures (missing folder, bad config, corrupt checkpoint...) print one line and exit 2;
only real bugs print a traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
from pathlib import Path

from simclr_studio import __version__

EXIT_USAGE = 2
EXIT_FAILED = 1
DEMO_MINUTES = 2.0  # `train --demo` without --epochs: a two-minute run of the default recipe


class CliError(Exception):
    pass


def demo_folder() -> Path:
    """The bundled demo images (inside the installed package, or resources/ in a source checkout)."""
    from simclr_studio.paths import resource

    folder = resource("demo")
    if not folder.is_dir():
        raise CliError("the bundled demo folder is missing from this installation")
    return folder


# ---- train ----------------------------------------------------------------------------------
def _train_config(args, data_dir: str):
    """The run's config: a saved config file, or the default recipe for this folder and machine;
    then the flags given on the command line, which always win."""
    from simclr_studio.config import AugmentConfig, RunConfig

    explicit = {k: getattr(args, k) for k in ("epochs", "batch_size", "backbone", "device", "seed", "optimizer",
                                              "lr", "temperature", "num_workers", "weights", "minutes", "image_size")
                if getattr(args, k) is not None}
    if args.config:
        cfg = RunConfig.load(args.config)
        keep_augment = "augment" in json.loads(Path(args.config).read_text())
    else:
        cfg = _recipe(args, data_dir)
        keep_augment = False
    if args.epochs is not None and args.minutes is None:
        cfg.minutes = None  # --epochs alone: a run of that many epochs, not the recipe's time budget
    for key, value in explicit.items():
        setattr(cfg, key, value)
    if args.image_size is not None and not keep_augment:
        cfg.augment = AugmentConfig.for_image_size(cfg.image_size, crop_scale=cfg.augment.crop_scale,
                                                   grayscale_p=cfg.augment.grayscale_p)
    if args.mask is not None:
        cfg.augment.mask_p = args.mask
    return cfg


def _recipe(args, data_dir: str):
    """The default recipe for the folder (a quick count and a few headers) on the chosen device."""
    from simclr_studio.data import looks_grayscale, scan_folder, typical_side
    from simclr_studio.device import resolve_device
    from simclr_studio.recipe import FolderFacts, suggest

    scan = scan_folder(data_dir, check_headers=False)
    if len(scan) == 0:
        raise CliError(f"no images found in {data_dir}")
    facts = FolderFacts(len(scan), typical_side(scan.paths), looks_grayscale(scan.paths))
    device_type = resolve_device(args.device or "auto").type
    minutes = args.minutes if args.minutes is not None else (DEMO_MINUTES if args.demo and args.epochs is None else None)
    recipe = suggest(facts, device_type, minutes, image_size=args.image_size)
    # Printed when training starts, so that a bad input's error stays one line.
    args.recipe_lines = [f"default recipe for {facts.n_images} images (typical side {facts.typical_side} px"
                         + (", grayscale" if facts.grayscale else "") + f") on {device_type}:"]
    args.recipe_lines += [f"  {why}" for why in recipe.reasons.values()]
    return recipe.config


def cmd_train(args) -> int:
    from simclr_studio.distributed import DistContext, launched_by_torchrun

    if args.demo and args.data_dir:
        raise CliError("give either DATA_DIR or --demo, not both")
    if args.nproc > 1 and not launched_by_torchrun():
        return _launch_torchrun(args.nproc, args.argv)
    # Under torchrun the process group is joined once the run's config (and so its device) is known.
    ctx = DistContext(rank=int(os.environ["RANK"]), world_size=int(os.environ["WORLD_SIZE"])) \
        if launched_by_torchrun() else DistContext()
    try:
        return _train(args, ctx)
    finally:
        if ctx.enabled:
            from simclr_studio.distributed import shutdown

            shutdown()


def _launch_torchrun(nproc: int, argv: list[str]) -> int:
    """``--nproc K``: the same command under torchrun on this machine (K processes, one per GPU)."""
    import subprocess

    from simclr_studio.distributed import describe_command, torchrun_command

    rest, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg == "--nproc":
            skip = True
        elif not arg.startswith("--nproc="):
            rest.append(arg)
    cmd = torchrun_command(nproc, rest)
    print(f"launching: {describe_command(cmd)}", file=sys.stderr)
    # torchrun passes SIGINT/SIGTERM on to the workers, which stop with a checkpoint; we wait for it.
    # (Ctrl-C reaches torchrun by itself; a SIGTERM sent to us alone is handed on.)
    proc = subprocess.Popen(cmd)
    stopping = []

    def on_sigint(signum, frame):
        stopping.append(signum)

    def on_sigterm(signum, frame):
        stopping.append(signum)
        proc.send_signal(signal.SIGTERM)

    previous = {signal.SIGINT: signal.signal(signal.SIGINT, on_sigint),
                signal.SIGTERM: signal.signal(signal.SIGTERM, on_sigterm)}
    try:
        code = proc.wait()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    # A signalled torchrun reports failure even when its workers stopped cleanly with a checkpoint.
    return 130 if stopping else code


def _train(args, ctx) -> int:
    from simclr_studio.config import RunConfig
    from simclr_studio.events import (
        BaselineEvent,
        CheckpointEvent,
        EpochEvent,
        ErrorEvent,
        EvalEvent,
        LogEvent,
        PlanEvent,
        PrepareProgress,
        RunFinished,
        RunStarted,
        StepEvent,
    )
    from simclr_studio.run_folder import RunFolder, ignored_on_resume, resume_config
    from simclr_studio.train import Trainer

    main_rank = ctx.rank == 0
    out = Path(args.out)
    if args.resume:
        if not RunFolder(out).last_checkpoint.exists():
            raise CliError(f"nothing to resume: no checkpoint at {RunFolder(out).last_checkpoint}")
        cfg = resume_config(RunFolder(out).load_config(), epochs=args.epochs, device=args.device)
        ignored = ["--" + name.replace("_", "-") for name in ignored_on_resume(
            {key: getattr(args, key) for key in ("batch_size", "backbone", "minutes", "image_size", "optimizer",
                                                 "lr", "temperature", "seed", "config", "weights", "mask")})]
        if (ignored or args.data_dir or args.demo) and main_rank:
            print(f"note: a resumed run keeps its saved config; ignoring {', '.join(ignored) or 'DATA_DIR'}",
                  file=sys.stderr)
    else:
        data_dir = str(demo_folder()) if args.demo else args.data_dir
        if not data_dir and args.config:  # the config names its data folder (as the app's do)
            data_dir = RunConfig.load(args.config).data_dir
        if not data_dir:
            raise CliError("DATA_DIR is required (or --demo for the bundled images)")
        if not Path(data_dir).is_dir():
            raise CliError(f"data folder not found: {data_dir}")
        if RunFolder(out).last_checkpoint.exists():
            raise CliError(f"{out} already holds a run; use --resume to continue it or choose another --out")
        cfg = _train_config(args, data_dir)
        cfg.data_dir = str(Path(data_dir).resolve())
    cfg.validate()
    if ctx.enabled:
        from simclr_studio.distributed import init_from_env

        ctx = init_from_env(cfg.device)
        if ctx.backend == "gloo" and cfg.device != "cpu":
            cfg.device = "cpu"  # gloo exchanges CPU tensors (a run without CUDA, or on MPS, trains on the CPU)

    from tqdm import tqdm

    bar = None
    quiet = args.quiet or not main_rank  # one progress display, from rank 0
    status = {"error": None}
    baseline: list[float] = []  # raw pixels' kNN, printed beside every epoch's

    def on_event(event):
        nonlocal bar
        if isinstance(event, PrepareProgress) and not quiet and event.stage == "decode":
            if bar is None or bar.desc != event.stage:
                if bar is not None:
                    bar.close()
                bar = tqdm(total=event.total, desc=event.stage, unit="img", leave=False, file=sys.stderr)
            bar.n = event.done
            bar.refresh()
        elif isinstance(event, RunStarted):
            if bar is not None:
                bar.close()
            for line in [] if quiet else getattr(args, "recipe_lines", []):
                print(line, file=sys.stderr)
            print(f"training {event.backbone} on {event.device}: {event.n_images} images, "
                  f"{event.steps_per_epoch} steps/epoch, {'RAM cache' if event.cached else 'streaming'}"
                  + (f", resuming at step {event.start_global_step}" if event.start_global_step else ""), file=sys.stderr)
            bar = None if quiet else tqdm(total=event.total_steps, initial=event.start_global_step, desc="train",
                                          unit="step", file=sys.stderr, dynamic_ncols=True)
        elif isinstance(event, StepEvent) and bar is not None:
            if bar.total != event.total_steps:  # a time budget has (re)planned the run's length
                bar.total = event.total_steps
            bar.update(event.global_step - bar.n)
            bar.set_postfix(epoch=event.epoch + 1, loss=f"{event.loss:.4f}", lr=f"{event.lr:.3g}",
                            img_s=f"{event.images_per_s:.0f}", refresh=False)
        elif isinstance(event, EpochEvent):
            msg = f"epoch {event.epoch + 1}: loss {event.loss:.4f}, {event.seconds:.1f}s, {event.images_per_s:.0f} img/s"
            (bar.write if bar is not None else print)(msg)
        elif isinstance(event, EvalEvent):
            msg = (f"epoch {event.epoch + 1}: kNN accuracy {event.knn_accuracy:.4f} (leave-one-out, k={event.k}, "
                   f"{event.n_images} images)" + (f"; raw pixels {baseline[0]:.4f}" if baseline else ""))
            (bar.write if bar is not None else print)(msg)
        elif isinstance(event, BaselineEvent):
            baseline[:] = [event.knn_accuracy]
            msg = (f"baseline: {event.features} kNN accuracy {event.knn_accuracy:.4f} "
                   f"(leave-one-out, k={event.k}, {event.n_images} images)")
            (bar.write if bar is not None else print)(msg)
        elif isinstance(event, PlanEvent):
            if bar is not None:
                bar.total = event.total_steps
            if not quiet:
                msg = (f"time budget {event.budget_s / 60:g} min: {event.total_steps:,} steps at "
                       f"{event.seconds_per_step:.3f} s/step, warm-up {event.warmup_steps:,}")
                (bar.write if bar is not None else print)(msg)
        elif isinstance(event, CheckpointEvent) and event.reason == "stop":
            print(f"checkpoint saved: {event.path}", file=sys.stderr)
        elif isinstance(event, LogEvent) and not quiet:
            (bar.write if bar is not None else print)(event.message)
        elif isinstance(event, ErrorEvent):
            status["error"] = event.message
        elif isinstance(event, RunFinished) and bar is not None:
            bar.close()

    if args.link:
        # Driven by the app (see training_link): events go to stdout as JSON lines (transient
        # progress included), everything printed for people to stderr; commands arrive on stdin.
        from simclr_studio.training_link import encode_event, open_event_pipe

        pipe = open_event_pipe()
        quiet = True
        print_event = on_event

        def on_event(event):  # noqa: F811 (wraps the printer above)
            print_event(event)
            try:
                pipe.write(encode_event(event))
                pipe.flush()
            except (BrokenPipeError, ValueError, OSError):  # the app went away: keep training, stop below
                trainer.stop()

    trainer = Trainer(cfg, out, on_event=on_event, resume=args.resume, rank=ctx.rank, world_size=ctx.world_size)
    if args.link and main_rank:
        from simclr_studio.training_link import serve_commands

        serve_commands(trainer)

    def on_signal(signum, frame):
        if main_rank:
            print("\nstopping: saving a checkpoint (Ctrl-C again to abort)", file=sys.stderr)
        trainer.stop()
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)

    # SIGTERM too: torchrun (and service managers) stop workers with it; a checkpoint is still saved.
    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        result = trainer.run()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if result == "failed":
        raise CliError(status["error"] or ("training failed" if main_rank else f"training failed on rank {ctx.rank}"))
    resumable = result == "stopped" and RunFolder(out).last_checkpoint.exists()
    if main_rank:
        print(f"{result}: run folder {out}" + (f" (resume with: simclr-studio train --out {out} --resume)" if resumable else ""))
    if result == "stopped" and ctx.enabled:
        return 0  # under torchrun any other code counts as a crash and tears the other ranks down
    return 0 if result == "completed" else EXIT_FAILED if result == "failed" else 130


# ---- embed / eval / export --------------------------------------------------------------------
def _features(run, data_dir: str, batch_size: int, device: str, quiet: bool):
    """Scan a folder and embed it chunk by chunk (bounded memory), with a progress bar."""
    from tqdm import tqdm

    from simclr_studio.data import scan_folder
    from simclr_studio.device import resolve_device
    from simclr_studio.evaluate import features_for_paths

    if not Path(data_dir).is_dir():
        raise CliError(f"data folder not found: {data_dir}")
    scan = scan_folder(data_dir)
    if len(scan) == 0:
        raise CliError(f"no images found in {data_dir}")
    dev = resolve_device(device)
    run.model.to(dev)
    with tqdm(total=len(scan), desc="embed", unit="img", disable=quiet, leave=False, file=sys.stderr) as bar:
        feats, failures = features_for_paths(run.model.backbone, scan.paths, run.config.image_size, dev, batch_size,
                                             progress=lambda d, t: bar.update(d - bar.n))
    scan = scan.drop(failures) if failures else scan
    for s in scan.skipped:
        print(f"skipped {s.path}: {s.reason}", file=sys.stderr)
    return scan, feats


def cmd_embed(args) -> int:
    from simclr_studio.export import save_embeddings
    from simclr_studio.trained import load_trained

    run = load_trained(args.run_dir, args.checkpoint)
    scan, feats = _features(run, args.data_dir, args.batch_size, args.device, args.quiet)
    coords = None
    if args.map != "none":
        from simclr_studio.projection import pca_2d, tsne_2d

        coords = (pca_2d if args.map == "pca" else tsne_2d)(feats)
    path = save_embeddings(args.out, feats, scan.paths, scan.labels, scan.classes, coords)
    print(f"wrote {feats.shape[0]} × {feats.shape[1]} features to {path}"
          + (f" with {args.map} map coordinates" if coords is not None else ""))
    return 0


def cmd_eval(args) -> int:
    from simclr_studio.evaluate import evaluate_features
    from simclr_studio.trained import load_trained

    run = load_trained(args.run_dir, args.checkpoint)
    scan, feats = _features(run, args.data_dir, args.batch_size, args.device, args.quiet)
    if not scan.labeled:
        raise CliError(f"{args.data_dir} has no class subfolders: evaluation needs labels (one subfolder per class)")
    labeled = [i for i, l in enumerate(scan.labels) if l >= 0]
    train_f, train_y = feats[labeled], [scan.labels[i] for i in labeled]
    test_f = test_y = None
    if args.test_dir:
        tscan, tfeats = _features(run, args.test_dir, args.batch_size, args.device, args.quiet)
        if tscan.classes != scan.classes:
            raise CliError(f"the test folder's classes {tscan.classes} differ from the training folder's {scan.classes}")
        keep = [i for i, l in enumerate(tscan.labels) if l >= 0]
        test_f, test_y = tfeats[keep], [tscan.labels[i] for i in keep]
    try:
        report = evaluate_features(train_f, train_y, len(scan.classes), test_f, test_y)
    except ValueError as exc:
        raise CliError(str(exc)) from None
    print(f"checkpoint {run.checkpoint} (epoch {run.epoch})")
    print(report.format())
    if args.json:
        from simclr_studio.atomic import atomic_write_text

        atomic_write_text(Path(args.json), json.dumps(report.__dict__, indent=2) + "\n")
    return 0


def cmd_export(args) -> int:
    from simclr_studio.export import export_weights
    from simclr_studio.trained import load_trained

    run = load_trained(args.run_dir, args.checkpoint)
    if args.format == "onnx":
        try:
            import onnx  # noqa: F401
        except ImportError:
            raise CliError("ONNX export needs the onnx extra: pip install 'simclr-studio[onnx]'") from None
    written = export_weights(run, args.format, args.out)
    print("wrote " + ", ".join(str(p) for p in written))
    return 0


# ---- parser ---------------------------------------------------------------------------------
def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def device_name(text: str) -> str:
    from simclr_studio.config import DEVICES

    if text in DEVICES or (text.startswith("cuda:") and text[5:].isdigit()):
        return text
    raise argparse.ArgumentTypeError(f"choose from {', '.join(DEVICES)} or cuda:N, not {text!r}")


def build_parser() -> argparse.ArgumentParser:
    from simclr_studio.config import BACKBONES, OPTIMIZERS

    parser = argparse.ArgumentParser(prog="simclr-studio", description="Train SimCLR encoders on your own image folders.")
    parser.add_argument("--version", action="version", version=f"simclr-studio {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    t = sub.add_parser("train", help="train a SimCLR encoder on an image folder",
                       description="Train a SimCLR encoder. Ctrl-C saves a checkpoint; --resume continues.")
    t.add_argument("data_dir", nargs="?", metavar="DATA_DIR", help="folder of images (class subfolders optional)")
    t.add_argument("--out", required=True, metavar="RUN_DIR", help="run folder for config, checkpoints and events")
    t.add_argument("--demo", action="store_true", help="train on the bundled demo images")
    t.add_argument("--config", metavar="FILE.json", help="a saved config.json to start from")
    t.add_argument("--resume", action="store_true", help="continue the run in RUN_DIR from its last checkpoint")
    t.add_argument("--minutes", type=float, metavar="M",
                   help="train for M minutes: the run measures its speed and lays its schedule over the time")
    t.add_argument("--epochs", type=int, help="train for this many epochs instead of a time budget")
    t.add_argument("--batch-size", type=int, dest="batch_size")
    t.add_argument("--backbone", help=f"{', '.join(BACKBONES)} or auto (resnet18 on a GPU, small-cnn on a CPU)")
    t.add_argument("--image-size", type=int, dest="image_size")
    t.add_argument("--device", type=device_name, metavar="DEVICE", help="auto (cuda > mps > cpu), cpu, cuda, cuda:N or mps")
    t.add_argument("--optimizer", choices=OPTIMIZERS)
    t.add_argument("--lr", type=float, help="peak learning rate (default: the recipe's, see the README)")
    t.add_argument("--temperature", type=float)
    t.add_argument("--weights", metavar="FILE", help="initialise the backbone from a local weights file")
    t.add_argument("--mask", type=float, metavar="P", help="probability of the mask-box augmentation")
    t.add_argument("--num-workers", type=int, dest="num_workers", help="loader processes when not cached in RAM")
    t.add_argument("--seed", type=int)
    t.add_argument("--nproc", type=positive_int, default=1, metavar="K",
                   help="train data-parallel in K processes on this machine (one per GPU) through torchrun; "
                        "for several machines run torchrun yourself (see the README)")
    t.add_argument("--quiet", action="store_true", help="no progress bars")
    t.add_argument("--link", action="store_true", help=argparse.SUPPRESS)  # the app's link: see training_link
    t.set_defaults(func=cmd_train)

    def run_args(p):
        p.add_argument("run_dir", metavar="RUN_DIR")
        p.add_argument("--checkpoint", help="a checkpoint file of the run (default: the latest)")

    def feature_args(p):
        p.add_argument("--batch-size", type=positive_int, default=256, dest="batch_size")
        p.add_argument("--device", type=device_name, default="auto", metavar="DEVICE", help="auto, cpu, cuda, cuda:N or mps")
        p.add_argument("--quiet", action="store_true")

    e = sub.add_parser("embed", help="compute encoder features for a folder")
    run_args(e)
    e.add_argument("data_dir", metavar="DATA_DIR")
    e.add_argument("--out", required=True, metavar="FEATURES.npz", help=".npz or .csv")
    e.add_argument("--map", choices=("none", "pca", "tsne"), default="none",
                   help="also store 2-D map coordinates (x, y columns in CSV, 'coords' in .npz)")
    feature_args(e)
    e.set_defaults(func=cmd_embed)

    v = sub.add_parser("eval", help="kNN and linear-probe accuracy on frozen features (needs class subfolders)")
    run_args(v)
    v.add_argument("data_dir", metavar="DATA_DIR")
    v.add_argument("--test-dir", metavar="DIR", help="held-out folder with the same classes (default: 80/20 split)")
    v.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    feature_args(v)
    v.set_defaults(func=cmd_eval)

    x = sub.add_parser("export", help="export the trained encoder weights")
    run_args(x)
    x.add_argument("--format", choices=("pt", "safetensors", "onnx"), required=True)
    x.add_argument("--out", required=True, metavar="PATH")
    x.set_defaults(func=cmd_export)
    return parser


SUBCOMMANDS = ("train", "embed", "eval", "export")


def gui_main(argv: list[str]) -> int:
    """``simclr-studio [PATH] [--demo]``: open the desktop app (on an image or run folder)."""
    parser = argparse.ArgumentParser(
        prog="simclr-studio", description="Open the desktop app. Subcommands: " + ", ".join(SUBCOMMANDS)
        + " (see simclr-studio COMMAND --help).")
    parser.add_argument("path", nargs="?", metavar="PATH", help="an image folder or a run folder to open")
    parser.add_argument("--demo", action="store_true", help="open the bundled demo images")
    args = parser.parse_args(argv)
    if args.path and not Path(args.path).is_dir():
        print(f"simclr-studio: error: not a folder: {args.path}", file=sys.stderr)
        return EXIT_USAGE
    try:
        from simclr_studio.gui.app import run_app
    except ImportError as exc:
        print(f"simclr-studio: error: the desktop app cannot start ({exc}); the CLI commands still work",
              file=sys.stderr)
        return EXIT_FAILED
    return run_app(args.path, demo=args.demo)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["torchrun"]:  # torchrun from a frozen bundle, which has no `python -m` (see distributed.py)
        from torch.distributed.run import main as torchrun

        try:
            torchrun(argv[1:])
        except Exception:  # torchrun has reported which worker failed and how
            return EXIT_FAILED
        return 0
    if not argv or (argv[0] not in SUBCOMMANDS and argv[0] not in ("-h", "--help", "--version")):
        return gui_main(argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    args.argv = argv
    from simclr_studio.checkpoint import CheckpointError
    from simclr_studio.config import ConfigError
    from simclr_studio.data import DataError

    try:
        return args.func(args)
    except (CliError, CheckpointError, ConfigError, DataError) as exc:
        print(f"simclr-studio: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except OSError as exc:  # a path that is a folder, a full disk, no permission...
        print(f"simclr-studio: error: {exc.strerror or exc}: {exc.filename or ''}".rstrip(": "), file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("simclr-studio: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
