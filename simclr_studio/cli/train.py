"""``simclr-studio train``: one run, from its config to its final line.

    cmd_train            several processes (--nproc, see stopping.launch_torchrun) or one; the process group's lifetime
    run_config           a new run's config: a config file or the default recipe, then the flags
    resumed_config       a resumed run's: the saved one (run_folder.resume_config), naming what it ignores
    ProgressPrinter      events on the terminal: tqdm bars, and lines in the one wording (session.wording)
    AppLink              ``--link``: events to the app as JSON lines, its commands from stdin (training_link)
    run_guard            one writer per run folder; a new run only in a new or empty folder (--overwrite
                         moves an old run aside); a resume rebuilds a lost config.json
    stopping             signals stop the run with a checkpoint; the events always end with a final state
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from simclr_studio.cli import DEMO_MINUTES, EXIT_INTERRUPTED, CliError, demo_folder
from simclr_studio.cli.parser import RUN_SETTINGS
from simclr_studio.cli.run_guard import check_before_launch, claim_run_folder
from simclr_studio.cli.stopping import launch_torchrun, run_until_stopped

if TYPE_CHECKING:
    from tqdm import tqdm

    from simclr_studio.config import RunConfig
    from simclr_studio.distributed import DistContext
    from simclr_studio.events import Event
    from simclr_studio.train import Trainer


def cmd_train(args: argparse.Namespace) -> int:
    from simclr_studio.distributed import launched_by_torchrun, shutdown

    if args.demo and args.data_dir:
        raise CliError("give either DATA_DIR or --demo, not both")
    if args.resume and args.overwrite:
        raise CliError("give either --resume or --overwrite, not both")
    if args.nproc > 1 and not launched_by_torchrun():
        check_before_launch(Path(args.out), args.resume, args.overwrite)  # one line here, not a torchrun failure
        return launch_torchrun(args.nproc, args.argv, Path(args.out))
    ctx = process_context()
    try:
        return train(args, ctx)
    finally:
        if ctx.enabled:
            shutdown()


def train(args: argparse.Namespace, ctx: DistContext) -> int:
    from simclr_studio.train import Trainer

    main_rank = ctx.rank == 0
    out = Path(args.out)
    if args.resume:
        if main_rank:  # only rank 0 writes the run (the others must not test its lock against rank 0)
            claim_run_folder(out, resume=True, overwrite=False)
        cfg, notes = resumed_config(args, out, main_rank)
    else:
        cfg, notes = run_config(args, out)
    cfg.validate()
    if main_rank and not args.resume:  # the inputs are good: only now is the folder claimed (or moved aside)
        claim_run_folder(out, resume=False, overwrite=args.overwrite)
    ctx = join_process_group(ctx, cfg)
    printer = ProgressPrinter(quiet=args.quiet or args.link or not main_rank, notes=notes)
    link = AppLink(printer) if args.link else None
    trainer = Trainer(cfg, out, on_event=link or printer, resume=args.resume, rank=ctx.rank,
                      world_size=ctx.world_size)
    if link is not None:
        link.attach(trainer, serve=main_rank)
    result = run_until_stopped(trainer, main_rank, printer)
    return final_line(result, out, ctx, printer.error)


# ---- the run's config ------------------------------------------------------------------------------
def run_config(args: argparse.Namespace, out: Path) -> tuple[RunConfig, list[str]]:
    """A new run's config and the notes told when it starts: the config file (whose values are the
    flags' defaults) or the default recipe for the folder and device; then the flags, which win."""
    from simclr_studio.config import AugmentConfig, RunConfig

    saved = RunConfig.load(args.config) if args.config else None
    data_dir = new_run_data_dir(args, saved)
    notes: list[str] = []
    if saved is not None:
        cfg = saved
        keep_augment = "augment" in json.loads(Path(args.config).read_text())
    else:
        cfg, notes = recipe(args, data_dir)
        keep_augment = False
    for name in RUN_SETTINGS:  # with a config file these hold its values, unless typed
        if getattr(args, name) is not None:
            setattr(cfg, name, getattr(args, name))
    if "epochs" in args.given and "minutes" not in args.given:
        cfg.minutes = None  # --epochs alone: a run of that many epochs, not a time budget
    if "image_size" in args.given and not keep_augment:
        cfg.augment = AugmentConfig.for_image_size(cfg.image_size, crop_scale=cfg.augment.crop_scale,
                                                   grayscale_p=cfg.augment.grayscale_p)
    if args.mask is not None:
        cfg.augment.mask_p = args.mask
    cfg.data_dir = str(Path(data_dir).resolve())
    return cfg, notes


def new_run_data_dir(args: argparse.Namespace, saved: RunConfig | None) -> str:
    """DATA_DIR, the demo folder, or the folder the config file names (as the app's config files do)."""
    data_dir = str(demo_folder()) if args.demo else args.data_dir
    if not data_dir and saved is not None:
        data_dir = saved.data_dir
    if not data_dir:
        raise CliError("DATA_DIR is required (or --demo for the bundled images)")
    if not Path(data_dir).is_dir():
        raise CliError(f"data folder not found: {data_dir}")
    return str(data_dir)


def recipe(args: argparse.Namespace, data_dir: str) -> tuple[RunConfig, list[str]]:
    """The default recipe for the folder (a quick count and a few headers) on the chosen device, and
    the lines that explain it (told when training starts, so that a bad input's error stays one line)."""
    from simclr_studio.data import scan_folder
    from simclr_studio.device import resolve_device
    from simclr_studio.recipe import folder_facts, suggest

    scan = scan_folder(data_dir, check_headers=False)
    if len(scan) == 0:
        raise CliError(f"no images found in {data_dir}")
    facts = folder_facts(scan.paths)
    device_type = resolve_device(args.device or "auto").type
    minutes = args.minutes
    if minutes is None and args.demo and args.epochs is None:
        minutes = DEMO_MINUTES
    suggested = suggest(facts, device_type, minutes, image_size=args.image_size)
    notes = [f"default recipe for {facts.n_images} images (typical side {facts.typical_side} px"
             + (", grayscale" if facts.grayscale else "") + f") on {device_type}:"]
    notes += [f"  {why}" for why in suggested.reasons.values()]
    return suggested.config, notes


def resumed_config(args: argparse.Namespace, out: Path, main_rank: bool) -> tuple[RunConfig, list[str]]:
    """The saved config, with only what a resume may change (run_folder's one rule); the flags it
    ignores are named once."""
    from simclr_studio.run_folder import RunFolder, ignored_on_resume, resume_config

    folder = RunFolder(out)
    if not folder.can_resume():
        raise CliError(f"nothing to resume: no checkpoint in {folder.checkpoint_dir}")
    # config.json, or the checkpoint's copy when it is lost (rank 0 has written it back by now;
    # the other ranks may read before it lands)
    cfg = resume_config(folder.saved_config(), epochs=args.epochs, device=args.device)
    ignored = ["--" + name.replace("_", "-")
               for name in ignored_on_resume({name: getattr(args, name) for name in sorted(args.given)})]
    if (ignored or args.data_dir or args.demo) and main_rank:
        print(f"note: a resumed run keeps its saved config; ignoring {', '.join(ignored) or 'DATA_DIR'}",
              file=sys.stderr)
    return cfg, []


# ---- processes --------------------------------------------------------------------------------------
def process_context() -> DistContext:
    """This process's place in the run: alone, or one rank under torchrun (the process group is
    joined once the run's config, and so its device, is known)."""
    from simclr_studio.distributed import DistContext, launched_by_torchrun

    if launched_by_torchrun():
        return DistContext(rank=int(os.environ["RANK"]), world_size=int(os.environ["WORLD_SIZE"]))
    return DistContext()


def join_process_group(ctx: DistContext, cfg: RunConfig) -> DistContext:
    if not ctx.enabled:
        return ctx
    from simclr_studio.distributed import init_from_env

    ctx = init_from_env(cfg.device)
    if ctx.backend == "gloo" and cfg.device != "cpu":
        cfg.device = "cpu"  # gloo exchanges CPU tensors (a run without CUDA, or on MPS, trains on the CPU)
    return ctx


# ---- progress on the terminal ----------------------------------------------------------------------
class ProgressPrinter:
    """Tells a run's events on the terminal: a bar while images are decoded and one while training,
    and a line for each event worth one, in the words the app's log uses (``EventWording``). Results
    (epochs, accuracies, plans) go to stdout; the run's start and its stop checkpoint to stderr.
    ``quiet``: no bars, and only the lines every run tells. A failure's message is kept in ``error``
    for the command's last line."""

    def __init__(self, quiet: bool, notes: list[str]) -> None:
        from simclr_studio.session.wording import EventWording

        self.quiet = quiet
        self.notes = notes  # told before the run's first line, when not quiet
        self.wording = EventWording()
        self.bar: tqdm | None = None
        self.error: str | None = None
        self.detached = False  # the terminal is gone (SIGHUP): print nothing more

    def detach(self) -> None:
        self.detached = True

    def __call__(self, event: Event) -> None:
        from simclr_studio.events import ErrorEvent

        if isinstance(event, ErrorEvent):
            self.error = event.message
        if self.detached:
            return
        try:
            self._show(event)
        except (OSError, ValueError):  # the terminal went away: the run goes on (its events are on disk)
            self.detached = True

    def _show(self, event: Event) -> None:
        from simclr_studio.events import RunStarted
        if isinstance(event, RunStarted):
            self._close_bar()
            for note in [] if self.quiet else self.notes:
                print(note, file=sys.stderr)
        line = self.line(event)
        if line is not None:
            self.write(line, to_stderr=self._is_status(event))
        self._follow(event)

    def line(self, event: Event) -> str | None:
        from simclr_studio.events import (
            BaselineEvent,
            CheckpointEvent,
            EpochEvent,
            ErrorEvent,
            EvalEvent,
            RunFinished,
            RunStarted,
        )

        if isinstance(event, (ErrorEvent, RunFinished)):
            return None  # the command's last line tells how the run ended
        if self.quiet and not isinstance(event, (RunStarted, EpochEvent, EvalEvent, BaselineEvent, CheckpointEvent)):
            return None
        return self.wording.line(event)

    @staticmethod
    def _is_status(event: Event) -> bool:
        from simclr_studio.events import CheckpointEvent, RunStarted

        return isinstance(event, (RunStarted, CheckpointEvent))

    def write(self, line: str, to_stderr: bool = False) -> None:
        from tqdm import tqdm

        tqdm.write(line, file=sys.stderr if to_stderr else sys.stdout)  # above any bar, which is redrawn

    def _follow(self, event: Event) -> None:
        """Open, move and close the bars."""
        from simclr_studio.events import PlanEvent, PrepareProgress, RunFinished, RunStarted, StepEvent

        if isinstance(event, PrepareProgress) and event.stage == "decode" and not self.quiet:
            self._show_decoding(event.done, event.total)
        elif isinstance(event, RunStarted) and not self.quiet:
            self._open_bar(total=event.total_steps, initial=event.start_global_step, desc="train", unit="step")
        elif isinstance(event, StepEvent) and self.bar is not None:
            self.bar.total = event.total_steps  # a time budget (re)plans the run's length
            self.bar.update(event.global_step - self.bar.n)
            self.bar.set_postfix(epoch=event.epoch + 1, loss=f"{event.loss:.4f}", lr=f"{event.lr:.3g}",
                                 img_s=f"{event.images_per_s:.0f}", refresh=False)
        elif isinstance(event, PlanEvent) and self.bar is not None:
            self.bar.total = event.total_steps
        elif isinstance(event, RunFinished):
            self._close_bar()

    def _show_decoding(self, done: int, total: int) -> None:
        if self.bar is None or self.bar.desc != "decode":
            self._close_bar()
            self._open_bar(total=total, initial=0, desc="decode", unit="img", leave=False)
        assert self.bar is not None
        self.bar.n = done
        self.bar.refresh()

    def _open_bar(self, total: int, initial: int, desc: str, unit: str, leave: bool = True) -> None:
        from tqdm import tqdm

        self.bar = tqdm(total=total, initial=initial, desc=desc, unit=unit, leave=leave, file=sys.stderr,
                        dynamic_ncols=True)

    def _close_bar(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


# ---- the app's link ---------------------------------------------------------------------------------
class AppLink:
    """``--link`` (the app drives this run, see training_link): every event also goes to stdout as a
    JSON line, everything printed for people to stderr; the app's commands arrive on stdin."""

    def __init__(self, printer: ProgressPrinter) -> None:
        from simclr_studio.training_link import open_event_pipe

        self.printer = printer
        self.pipe = open_event_pipe()
        self.trainer: Trainer | None = None

    def attach(self, trainer: Trainer, serve: bool) -> None:
        """The run that the app's commands (and its going away) act on; ``serve``: read them."""
        from simclr_studio.training_link import serve_commands

        self.trainer = trainer
        if serve:
            serve_commands(trainer)

    def __call__(self, event: Event) -> None:
        from simclr_studio.training_link import encode_event

        self.printer(event)
        try:
            self.pipe.write(encode_event(event))
            self.pipe.flush()
        except (BrokenPipeError, ValueError, OSError):  # the app went away: stop with a checkpoint
            if self.trainer is not None:
                self.trainer.stop()


# ---- stopping and the end --------------------------------------------------------------------------
def final_line(result: str, out: Path, ctx: DistContext, error: str | None) -> int:
    """Tell how the run ended (a failure as the one-line error) and choose the exit code."""
    from simclr_studio.run_folder import RunFolder

    main_rank = ctx.rank == 0
    if result == "failed":
        raise CliError(error or ("training failed" if main_rank else f"training failed on rank {ctx.rank}"))
    resumable = result == "stopped" and RunFolder(out).can_resume()
    if main_rank:
        print(f"{result}: run folder {out}"
              + (f" (resume with: simclr-studio train --out {out} --resume)" if resumable else ""))
    if result == "stopped" and ctx.enabled:
        return 0  # under torchrun any other code counts as a crash and tears the other ranks down
    return 0 if result == "completed" else EXIT_INTERRUPTED
