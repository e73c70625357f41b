"""The training loop: plain, explicit, resumable, and driven by whoever holds the Trainer.

A run goes through four phases: set-up (device, config, data, model, optimiser), restore (from a
checkpoint, and a time budget's first plan), then epochs of steps, each followed by its epoch end
(report, online kNN, checkpoint, re-plan). Control (pause/resume/stop) is honoured between steps.
Every step's randomness is a pure function of (seed, step), and each epoch's order of (seed,
epoch), so a resumed run repeats exactly the losses an uninterrupted run would have produced.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from simclr_studio.atomic import remove_leftover_temps
from simclr_studio.augment import make_views, normalize, step_generator
from simclr_studio.batches import BatchSource
from simclr_studio.budget import CALIBRATION_STEPS, StepTimes, TimeBudget
from simclr_studio.config import RunConfig
from simclr_studio.data import DataError, ScanResult
from simclr_studio.device import amp_dtype, describe, resolve_device
from simclr_studio.events import (
    CheckpointEvent,
    EpochEvent,
    ErrorEvent,
    Event,
    EventLog,
    LogEvent,
    PlanEvent,
    RunFinished,
    RunStarted,
    StateEvent,
    StepEvent,
)
from simclr_studio.loss import GatherFn, nt_xent
from simclr_studio.model import build_model
from simclr_studio.online_knn import OnlineKnn
from simclr_studio.optim import build_optimizer, set_lr
from simclr_studio.run_control import RunControl, failure_event
from simclr_studio.run_folder import RunFolder
from simclr_studio.run_lock import RunBusyError, RunLock
from simclr_studio.training_data import prepare_training_data
from simclr_studio.training_state import (
    EpochResult,
    Position,
    Schedule,
    Setup,
    checkpoint_state,
    load_model_weights,
    resolve_config,
    restore_training_state,
    saved_world_size,
    write_checkpoint,
)

__all__ = ["Trainer", "resolve_config"]  # resolve_config: where benchmarks/quality.py finds it

if TYPE_CHECKING:
    from simclr_studio.distributed import StepAgreement


class Trainer:
    """Runs one SimCLR training run in ``run_dir`` and reports typed events to ``on_event``."""

    def __init__(self, cfg: RunConfig, run_dir: str | Path, on_event: Callable[[Event], None] | None = None,
                 resume: bool = False, rank: int = 0, world_size: int = 1, gather: GatherFn | None = None) -> None:
        """``rank``/``world_size`` > 1: one process of a torch.distributed run (the process group must
        be initialised); the negatives are then gathered from all ranks unless ``gather`` says otherwise."""
        self.cfg = cfg
        self.run_dir = Path(run_dir)
        self.folder = RunFolder(run_dir)
        self.on_event = on_event
        self.resume = resume
        self.rank, self.world_size = rank, world_size
        self.is_main = rank == 0  # only rank 0 writes events and checkpoints
        if gather is None and world_size > 1:
            from simclr_studio.distributed import gather_with_grad

            gather = gather_with_grad
        self.gather = gather
        self._agree: StepAgreement | None = None  # set by wrap_model when distributed
        self.control = RunControl()
        self._log: EventLog | None = None
        self.status = "created"
        self.budget: TimeBudget | None = None  # set in run() when the config has a time budget
        self.position = Position()  # where the run stands (what RunFinished reports)
        self.resumed_from: Path | None = None  # the checkpoint a resume started from
        # The run folder's writer lock (rank 0): taken by run(), or set here by a caller that holds it already.
        self.lock: RunLock | None = None

    # ---- control (thread-safe; called from the GUI thread or a signal handler) -------------
    def pause(self) -> None:
        self.control.pause()

    def unpause(self) -> None:
        self.control.unpause()

    def stop(self) -> None:
        self.control.stop()

    def emit(self, event: Event) -> None:
        if not self.is_main:
            if isinstance(event, ErrorEvent):  # only rank 0 writes events: say it here, or it is lost
                print(f"rank {self.rank}: {event.message}", file=sys.stderr, flush=True)
            return
        if self._log is not None:
            try:
                self._log.write(event)
            except OSError as exc:  # a full disk: the events file ends here, the run's owner still hears
                print(f"cannot write {self.folder.events_file}: {exc}", file=sys.stderr, flush=True)
                self._log = None
        if self.on_event is not None:
            self.on_event(event)

    # ---- the run -------------------------------------------------------------------------------
    def run(self) -> str:
        """Train until done, stopped or failed; returns the final status. Never raises for expected failures."""
        self.run_dir.mkdir(parents=True, exist_ok=True)
        # The budget's clock starts here: scanning and decoding are part of the time the user gave.
        self.budget = TimeBudget(self.cfg.minutes) if self.cfg.minutes else None
        own_lock = self.is_main and self.lock is None  # rank > 0 never touches the lock
        try:
            if own_lock:
                self.lock = RunLock(self.run_dir)
                self.lock.acquire()  # before anything is written: a run folder has one writer
        except RunBusyError as exc:  # the holder owns config.json and events.jsonl: write nothing
            self.lock, self.status = None, "failed"
            if self.on_event is not None:
                self.on_event(ErrorEvent(message=str(exc), category="busy"))
                self.on_event(RunFinished(status="failed", epoch=0, global_step=0))
            return self.status
        try:
            if self.is_main:
                self._log = EventLog(self.folder.events_file, tensorboard=self.cfg.tensorboard)
                self._clean_leftovers()
            self.status = self._run()
        except InterruptedError:
            self.status = "stopped"
        except Exception as exc:
            event = failure_event(exc, self.cfg)
            self.emit(event or ErrorEvent(message=f"{type(exc).__name__}: {exc}", category="error"))
            self.status = "failed"
            if event is None:
                raise  # a bug: reported, and its traceback kept
        finally:
            self.emit(RunFinished(status=self.status, epoch=self.position.epoch,
                                  global_step=self.position.global_step))
            if self._log is not None:
                self._log.close()
                self._log = None
            if own_lock and self.lock is not None:
                self.lock.release()
                self.lock = None
        return self.status

    def _clean_leftovers(self) -> None:
        """Remove the temp files of writes a killed run left half done (only the writer may)."""
        removed = remove_leftover_temps(self.run_dir) + remove_leftover_temps(self.folder.checkpoint_dir)
        if removed:
            self.emit(LogEvent(message=f"removed {len(removed)} unfinished temp file(s) a killed run left: "
                                       + ", ".join(p.name for p in removed)))

    def _run(self) -> str:
        self.status = "running"
        run, state = self._set_up()
        schedule = Schedule.for_epochs(self.cfg, self.world_size, run.source.steps_per_epoch)
        start = self.position = self._restore(state, run, schedule)
        self.emit(RunStarted(run_dir=str(self.run_dir), device=describe(run.device), backbone=self.cfg.backbone,
                             n_images=len(run.scan), steps_per_epoch=schedule.steps_per_epoch,
                             total_steps=schedule.total_steps, start_epoch=start.epoch,
                             start_global_step=start.global_step, cached=run.source.cached, labeled=run.scan.labeled))
        if start.global_step >= schedule.total_steps:
            return "completed"
        knn = None
        if run.scan.labeled and self.cfg.eval_every and self.is_main:
            knn = OnlineKnn.sample(run.scan, run.source, self.cfg.image_size)
        if knn is not None and state is None:
            self.emit(knn.baseline())
        run.train_model.train()
        times = StepTimes()
        while self.position.global_step < schedule.total_steps:
            epoch = self._train_epoch(run, schedule, times)
            if epoch.ended:
                return epoch.ended
            if self._end_epoch(run, schedule, times, knn, epoch) == "stopped":
                return "stopped"
        self._barrier()
        return "completed"

    # ---- set-up and restore ------------------------------------------------------------------
    def _set_up(self) -> tuple[Setup, dict[str, Any] | None]:
        """The run's parts, and the checkpoint to resume from (None: a new run)."""
        cfg = self.cfg
        device = resolve_device(cfg.device)
        if self.world_size > 1 and device.type == "cuda":
            device = torch.device("cuda", torch.cuda.current_device())  # this rank's GPU (torchrun's LOCAL_RANK)
        state = None
        if self.resume and self.folder.checkpoints():
            self.resumed_from, state, note = self.folder.checkpoint_to_resume()
            if note:
                self.emit(LogEvent(message=note))
        resolve_config(cfg, device)
        cfg.validate()
        if self.is_main:
            cfg.save(self.folder.config_file)
        scan, source = self._prepare_data(device)
        torch.manual_seed(cfg.seed)  # model initialisation
        # On resume the checkpoint holds the weights: the initial weights file is not needed again.
        model = build_model(cfg, load_weights=state is None).to(device)
        if state is not None:
            load_model_weights(model, state, cfg)  # before wrapping, which shares rank 0's weights
        channels_last = cfg.channels_last and device.type in ("cuda", "cpu")
        if channels_last:
            model = model.to(memory_format=torch.channels_last)
        train_model = self.wrap_model(model, device)
        if self._agree is not None and not self._agree.same_everywhere(len(scan)):
            raise DataError(f"the processes found different numbers of images in {cfg.data_dir} (this one "
                            f"{len(scan)}): is the folder still being copied, or not the same on every machine?")
        optimizer = build_optimizer(model, cfg.optimizer, cfg.resolved_lr(self.world_size),
                                    cfg.resolved_weight_decay(), cfg.momentum)
        dtype = amp_dtype(device) if cfg.amp else None
        scaler = torch.amp.GradScaler("cuda") if dtype == torch.float16 else None
        return Setup(device, scan, source, model, train_model, optimizer, scaler, dtype, channels_last), state

    def _prepare_data(self, device: torch.device) -> tuple[ScanResult, BatchSource]:
        """The folder's images and this process's batches (benchmarks/throughput.py notes what they were)."""
        return prepare_training_data(self.cfg, device, self.rank, self.world_size, self.emit,
                                     lambda: self.control.stop_asked)

    def _restore(self, state: dict[str, Any] | None, run: Setup, schedule: Schedule) -> Position:
        """Where the run starts: a checkpoint's position, with its optimiser, scaler and RNG; under a
        time budget also the used time and the saved plan (or a provisional one)."""
        position = Position()
        if state is not None:
            position = restore_training_state(state, run.optimizer, run.scaler, self.world_size,
                                              schedule.steps_per_epoch, self.cfg.optimizer)
            saved_world = saved_world_size(state)
            if saved_world != self.world_size:
                batch = self.cfg.batch_size
                self.emit(LogEvent(message=(
                    f"checkpoint of a {saved_world}-process run resumed on {self.world_size}: global batch "
                    f"{batch * saved_world} → {batch * self.world_size}, peak lr {schedule.base_lr:.4g}")))
            self.emit(LogEvent(message=f"resumed from {self.resumed_from} at epoch {position.epoch + 1}, "
                                       f"step {position.step_in_epoch}"))
        if self.budget is not None:
            saved = (state or {}).get("scheduler") or {}
            schedule.total_steps, schedule.warmup_steps = self.budget.first_plan(saved, position.global_step)
        return position

    # ---- one epoch -----------------------------------------------------------------------------
    def _train_epoch(self, run: Setup, schedule: Schedule, times: StepTimes) -> EpochResult:
        """The epoch's steps from the current position, until its end or the run's last step."""
        pos, budget = self.position, self.budget
        started = time.perf_counter()
        losses: list[float] = []
        times.restart()
        for batch, extents in run.source.batches_with_extents(pos.epoch, pos.step_in_epoch):
            stop, paused = self._control()
            if stop:
                self._checkpoint(run, schedule, pos, "stop")
                self._barrier()  # no rank leaves while rank 0 is still writing
                return EpochResult(losses, time.perf_counter() - started, ended="stopped")
            if paused:
                pause_s = times.skip_pause()  # a pause is neither step time nor budget time
                if budget is not None:
                    budget.add_pause(pause_s)
            step, lr = pos.step_in_epoch, schedule.lr(pos.global_step)
            set_lr(run.optimizer, lr)
            loss = self.train_step(run.train_model, run.optimizer, run.scaler, batch, run.device, pos.global_step,
                                   run.dtype, run.channels_last, extents)
            if self._agree is not None:
                loss = self._agree.mean(loss)  # the global loss; NaN on any rank is NaN on all
            if not math.isfinite(loss):
                kept = ("the last good checkpoint was kept" if self.folder.checkpoints()
                        else "no checkpoint had been saved yet")
                self.emit(ErrorEvent(category="nan", message=(
                    f"loss became {loss} at epoch {pos.epoch + 1}, step {step + 1}; training stopped and {kept}. "
                    f"Try a lower learning rate (now {lr:.4g}) or turn off mixed precision.")))
                return EpochResult(losses, time.perf_counter() - started, ended="failed")
            pos.step_done()
            losses.append(loss)
            times.lap()
            if budget is not None and not budget.calibrated:
                self._plan_budget(budget, schedule, times)
            sec_per_step = times.recent_mean()
            self.emit(StepEvent(epoch=pos.epoch, step=step, global_step=pos.global_step,
                                total_steps=schedule.total_steps, loss=loss, lr=lr,
                                images_per_s=self.cfg.batch_size * self.world_size / max(sec_per_step, 1e-9),
                                eta_s=sec_per_step * (schedule.total_steps - pos.global_step)))
            if pos.global_step >= schedule.total_steps:
                break  # a time-budgeted run ends inside its last epoch
        return EpochResult(losses, time.perf_counter() - started)

    def _end_epoch(self, run: Setup, schedule: Schedule, times: StepTimes, knn: OnlineKnn | None,
                   epoch: EpochResult) -> str | None:
        """Note streaming decode failures, report the epoch, measure the online kNN when due, save the
        checkpoint and re-plan a time budget; "stopped" when a stop came at the epoch boundary."""
        cfg, pos = self.cfg, self.position
        started = time.perf_counter()
        if run.source.decode_failures:
            self.emit(LogEvent(message=f"{run.source.decode_failures} file(s) failed to decode while streaming and "
                                       "were replaced by grey images (see warnings)"))
            run.source.decode_failures = 0
        if not epoch.losses and self._control()[0]:  # stopped at an epoch boundary
            self._checkpoint(run, schedule, pos, "stop")
            self._barrier()
            return "stopped"
        n_images = len(epoch.losses) * cfg.batch_size * self.world_size
        self.emit(EpochEvent(epoch=pos.epoch, loss=float(np.mean(epoch.losses)) if epoch.losses else float("nan"),
                             seconds=epoch.seconds, images_per_s=n_images / max(epoch.seconds, 1e-9)))
        last = pos.global_step >= schedule.total_steps
        if knn is not None and knn.due(pos.epoch, cfg.eval_every, self.budget is not None, last, time.perf_counter()):
            knn_start = time.perf_counter()
            self.emit(knn.evaluate(run.model, run.device, pos.epoch))
            knn.measured(knn_start, time.perf_counter())
        after = pos.next_epoch()
        self._checkpoint(run, schedule, after, "epoch")
        self.position = after
        if self.budget is not None:
            self.budget.add_epoch_end(time.perf_counter() - started)
            if not last:
                self._plan_budget(self.budget, schedule, times)
        return None

    def _checkpoint(self, run: Setup, schedule: Schedule, position: Position, reason: str) -> None:
        """Save everything resuming needs (rank 0 only), atomically; keep the newest per-epoch files."""
        if not self.is_main:
            return
        state = checkpoint_state(run.model, run.optimizer, run.scaler, schedule, self.budget, position,
                                 self.world_size, self.cfg)
        path = write_checkpoint(self.folder, state, reason == "epoch", self.cfg.keep_checkpoints)
        self.emit(CheckpointEvent(path=str(path), epoch=position.epoch, global_step=position.global_step,
                                  reason=reason))

    def _plan_budget(self, budget: TimeBudget, schedule: Schedule, times: StepTimes) -> None:
        """Lay the schedule over the time budget: after the first step, after the calibration steps
        and at every epoch end. Distributed, rank 0's plan is every rank's."""
        seconds = budget.pace(times)
        if seconds is None:
            return
        total, warmup = budget.plan(self.position.global_step, seconds, schedule.steps_per_epoch)
        if self._agree is not None:
            total, warmup = self._agree.broadcast_ints(total, warmup)
        schedule.total_steps, schedule.warmup_steps = total, warmup
        if len(times.timed()) >= CALIBRATION_STEPS:
            budget.calibrated = True
            self.emit(PlanEvent(total_steps=total, warmup_steps=warmup, seconds_per_step=seconds,
                                budget_s=budget.budget_s))

    # ---- between steps and processes ---------------------------------------------------------
    def _barrier(self) -> None:
        if self._agree is not None:
            self._agree.barrier()

    def _control(self) -> tuple[bool, bool]:
        """(stop now, was paused), the same on every rank; waits out a pause."""
        return self.control.between_steps(self._agree, lambda state: self.emit(StateEvent(state=state)))

    def wrap_model(self, model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
        """DistributedDataParallel (with SyncBatchNorm on CUDA when configured) across processes;
        the model itself on one process."""
        if self.world_size == 1:
            return model
        from simclr_studio.distributed import StepAgreement, wrap_model

        self._agree = StepAgreement(device)
        return wrap_model(model, device, sync_bn=self.cfg.sync_bn)

    def train_step(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                   scaler: torch.amp.GradScaler | None, batch: torch.Tensor, device: torch.device, global_step: int,
                   dtype: torch.dtype | None, channels_last: bool, extents: torch.Tensor | None = None) -> float:
        cfg = self.cfg
        batch = batch.to(device, non_blocking=True)
        # Augmentation runs here, batched on the training device (the GPU when there is one).
        g = step_generator(cfg.seed * max(1, self.world_size) + self.rank, global_step, device)
        with torch.no_grad():
            v1, v2 = make_views(batch, cfg.augment, cfg.image_size, g, extents)
            x = normalize(torch.cat((v1, v2), 0))
            if channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
            _, z = model(x)
        z1, z2 = z.float().chunk(2)
        loss = nt_xent(z1, z2, cfg.temperature, self.gather)
        optimizer.zero_grad(set_to_none=True)
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
        else:
            loss.backward()
            optimizer.step()
        return float(loss.detach())
