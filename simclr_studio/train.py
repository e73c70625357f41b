"""The training loop: plain, explicit, resumable, and driven by whoever holds the Trainer.

Control (pause/resume/stop) is honoured between steps. Every step's randomness is a pure function
of (seed, step), and each epoch's order of (seed, epoch), so a resumed run repeats exactly the
losses an uninterrupted run would have produced.
"""

from __future__ import annotations

import math
import os
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from simclr_studio.atomic import atomic_copy
from simclr_studio.augment import centre_view, make_views, normalize, step_generator
from simclr_studio.budget import CALIBRATION_STEPS, TimeBudget
from simclr_studio.checkpoint import CheckpointError, load_training_checkpoint, save_training_checkpoint
from simclr_studio.config import ConfigError, RunConfig
from simclr_studio.data import (
    BatchSource,
    DataError,
    ScanResult,
    decode_cache,
    fits_in_ram,
    plan_cache_layout,
    scan_folder,
    typical_side,
    without_failures,
)
from simclr_studio.device import amp_dtype, describe, resolve_device
from simclr_studio.evaluate import extract_features, iter_batches, knn_sample, leave_one_out_knn, raw_pixel_features
from simclr_studio.events import (
    BaselineEvent,
    CheckpointEvent,
    EpochEvent,
    ErrorEvent,
    EvalEvent,
    Event,
    EventLog,
    LogEvent,
    PlanEvent,
    PrepareProgress,
    RunFinished,
    RunStarted,
    StateEvent,
    StepEvent,
)
from simclr_studio.loss import nt_xent
from simclr_studio.model import SimCLRModel, build_model
from simclr_studio.optim import build_optimizer, lr_at, set_lr
from simclr_studio.run_folder import RunFolder


def resolve_config(cfg: RunConfig, device: torch.device) -> RunConfig:
    """Fill in the 'auto' choices, so the saved config says what actually ran."""
    if cfg.backbone == "auto":
        cfg.backbone = "resnet18" if device.type == "cuda" else "small-cnn"
    if cfg.small_stem is None:
        cfg.small_stem = cfg.resolved_small_stem()
    return cfg


class Trainer:
    """Runs one SimCLR training run in ``run_dir`` and reports typed events to ``on_event``."""

    def __init__(self, cfg: RunConfig, run_dir: str | Path, on_event: Callable[[Event], None] | None = None,
                 resume: bool = False, rank: int = 0, world_size: int = 1, gather=None):
        """``rank``/``world_size`` > 1: one process of a torch.distributed run (the process group must
        be initialised); the negatives are then gathered from all ranks unless ``gather`` says otherwise."""
        self.cfg = cfg
        self.run_dir = Path(run_dir)
        self.folder = RunFolder(run_dir)
        self.on_event = on_event
        self.resume = resume
        self.rank, self.world_size = rank, world_size
        if gather is None and world_size > 1:
            from simclr_studio.distributed import gather_with_grad

            gather = gather_with_grad
        self.gather = gather
        self._agree = None  # StepAgreement when distributed
        self._stop = threading.Event()
        self._running = threading.Event()
        self._running.set()
        self._log: EventLog | None = None
        self.status = "created"
        self.budget: TimeBudget | None = None  # set in run() when the config has a time budget
        self._knn_cost, self._knn_end = 0.0, 0.0  # the last online kNN's duration and end (perf_counter)

    # ---- control (thread-safe; called from the GUI thread or a signal handler) -------------
    def pause(self) -> None:
        self._running.clear()

    def unpause(self) -> None:
        self._running.set()

    def stop(self) -> None:
        self._stop.set()
        self._running.set()  # wake a paused loop so it can stop

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def emit(self, event: Event) -> None:
        if not self.is_main:
            if isinstance(event, ErrorEvent):  # only rank 0 writes events: say it here, or it is lost
                print(f"rank {self.rank}: {event.message}", file=sys.stderr, flush=True)
            return
        if self._log is not None:
            self._log.write(event)
        if self.on_event is not None:
            self.on_event(event)

    # ---- setup --------------------------------------------------------------------------------
    def _prepare_data(self, device: torch.device) -> tuple[ScanResult, BatchSource]:
        cfg = self.cfg
        scan = scan_folder(cfg.data_dir, progress=lambda d, t: self.emit(PrepareProgress(stage="scan", done=d, total=t)),
                           should_stop=self._stop.is_set)
        if len(scan) == 0:
            raise DataError(f"no images found in {cfg.data_dir}" + (f" ({len(scan.skipped)} files skipped)" if scan.skipped else ""))
        BatchSource.check_batch_size(len(scan), cfg.batch_size, self.world_size)  # fail before a long decode
        # Every process keeps its own cache: the budget is shared by the processes on this machine.
        local_procs = int(os.environ.get("LOCAL_WORLD_SIZE", "1")) if self.world_size > 1 else 1
        budget_gb = cfg.cache_ram_gb / local_procs
        side = typical_side(scan.paths)
        layout = plan_cache_layout(cfg.image_size, side, budget_gb * (1 << 30), len(scan))
        cache = extents = None
        if fits_in_ram(len(scan), layout.stored, budget_gb):
            cache, extents, failures = decode_cache(
                scan.paths, layout,
                progress=lambda d, t: self.emit(PrepareProgress(stage="decode", done=d, total=t)),
                should_stop=self._stop.is_set)
            if failures:
                cache = without_failures(cache, failures)
                extents = without_failures(extents, failures) if extents is not None else None
                scan = scan.drop(failures)
        else:  # streamed: whole images too, at the training size's cache scale
            layout = plan_cache_layout(cfg.image_size, side)
        if layout.whole:
            self.emit(LogEvent(message=f"crops are cut from whole images with their shorter side at {layout.side} px"))
        for skipped in scan.skipped:
            self.emit(LogEvent(message=f"skipped {skipped.path}: {skipped.reason}"))
        if len(scan) == 0:
            raise DataError(f"no readable images in {cfg.data_dir}")
        source = BatchSource(scan.paths, cfg.image_size, cfg.batch_size, cfg.seed, cache=cache,
                             num_workers=cfg.num_workers, rank=self.rank, world_size=self.world_size,
                             pin_memory=device.type == "cuda", layout=layout, extents=extents)
        return scan, source

    def _checkpoint(self, model, optimizer, scaler, epoch: int, step_in_epoch: int, global_step: int, reason: str) -> Path:
        """Save everything resuming needs (rank 0 only), atomically; keep the newest per-epoch files."""
        path = self.folder.last_checkpoint
        if not self.is_main:
            return path
        raw = model.module if hasattr(model, "module") else model
        state = {
            "model": raw.state_dict(),
            "optimizer": optimizer.state_dict(),
            "scheduler": {"kind": "warmup-cosine", "base_lr": self.base_lr, "warmup_steps": self.warmup_steps,
                          "total_steps": self.total_steps, **(self.budget.to_state() if self.budget else {})},
            "scaler": scaler.state_dict() if scaler is not None else None,
            "rng": {"torch": torch.get_rng_state(),
                    "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else []},
            "epoch": epoch,
            "step_in_epoch": step_in_epoch,
            "global_step": global_step,
            "world_size": self.world_size,
            "config": self.cfg.to_json(),
        }
        save_training_checkpoint(state, path)
        if reason == "epoch":
            atomic_copy(path, self.folder.epoch_checkpoint(epoch))
            old = self.folder.epoch_checkpoints()
            for stale in old[: max(0, len(old) - self.cfg.keep_checkpoints)]:
                stale.unlink(missing_ok=True)
        self.emit(CheckpointEvent(path=str(path), epoch=epoch, global_step=global_step, reason=reason))
        return path

    def _knn_images(self, scan: ScanResult, source: BatchSource) -> tuple[np.ndarray, torch.Tensor] | None:
        """The online kNN's sample (class-balanced, at most 10,000 images) as evaluation views at the
        training size, uint8: the same images and protocol every epoch and for the baseline."""
        labels = np.asarray(scan.labels)
        idx = knn_sample(labels)
        if source.cache is None or len(idx) < 10 or len(np.unique(labels[idx])) < 2:
            return None
        rows = torch.as_tensor(idx)
        views = []
        for start in range(0, len(rows), 512):
            part = rows[start : start + 512]
            extents = source.extents.index_select(0, part) if source.extents is not None else None
            pixels = source.cache.index_select(0, part)
            if source.layout.whole or pixels.shape[-1] != self.cfg.image_size:
                pixels = (centre_view(pixels, self.cfg.image_size, extents) * 255).round_().to(torch.uint8)
            views.append(pixels)
        return labels[idx], torch.cat(views)

    def _baseline(self, knn_set: tuple[np.ndarray, torch.Tensor], n_classes: int) -> None:
        """Raw pixels under the online kNN's protocol: the number every epoch's kNN should beat."""
        labels, images = knn_set
        acc, k = leave_one_out_knn(raw_pixel_features(images), labels, n_classes)
        self.emit(BaselineEvent(features="raw pixels", knn_accuracy=acc, n_images=len(labels), k=k))

    def _online_knn(self, model: SimCLRModel, knn_set: tuple[np.ndarray, torch.Tensor], n_classes: int,
                    device, epoch: int) -> None:
        """Leave-one-out weighted kNN on unaugmented images: a cheap 'is it learning?' signal."""
        labels, images = knn_set
        raw = model.module if hasattr(model, "module") else model
        feats = extract_features(raw.backbone, iter_batches(images, 512), device)
        acc, k = leave_one_out_knn(feats, labels, n_classes)
        self.emit(EvalEvent(epoch=epoch, knn_accuracy=acc, n_images=len(labels), k=k))

    # ---- the loop ----------------------------------------------------------------------------
    def run(self) -> str:
        """Train until done, stopped or failed; returns the final status. Never raises for expected failures."""
        self.run_dir.mkdir(parents=True, exist_ok=True)
        # The budget's clock starts here: scanning and decoding are part of the time the user gave.
        self.budget = TimeBudget(self.cfg.minutes) if self.cfg.minutes else None
        if self.is_main:
            self._log = EventLog(self.folder.events_file)
        try:
            self.status = self._run()
        except (DataError, ConfigError, CheckpointError) as exc:
            category = {DataError: "data", ConfigError: "config", CheckpointError: "checkpoint"}[type(exc)]
            self.emit(ErrorEvent(message=str(exc), category=category))
            self.status = "failed"
        except torch.OutOfMemoryError:
            self.emit(ErrorEvent(category="oom", message=(
                f"out of memory at batch size {self.cfg.batch_size} and image size {self.cfg.image_size}; "
                f"try a batch size of {max(2, self.cfg.batch_size // 2)} or a smaller backbone")))
            self.status = "failed"
        except InterruptedError:
            self.status = "stopped"
        except Exception as exc:  # report, never die silently
            self.emit(ErrorEvent(message=f"{type(exc).__name__}: {exc}", category="error"))
            self.status = "failed"
            raise
        finally:
            epoch, global_step = getattr(self, "_position", (0, 0))
            self.emit(RunFinished(status=self.status, epoch=epoch, global_step=global_step))
            if self._log is not None:
                self._log.close()
                self._log = None
        return self.status

    def _run(self) -> str:
        self.status = "running"
        cfg = self.cfg
        device = resolve_device(cfg.device)
        if self.world_size > 1 and device.type == "cuda":
            device = torch.device("cuda", torch.cuda.current_device())  # this rank's GPU (torchrun's LOCAL_RANK)
        state = None
        if self.resume and self.folder.last_checkpoint.exists():
            state = load_training_checkpoint(self.folder.last_checkpoint)
        resolve_config(cfg, device)
        cfg.validate()
        if self.is_main:
            cfg.save(self.folder.config_file)

        scan, source = self._prepare_data(device)
        torch.manual_seed(cfg.seed)  # model initialisation
        # On resume the checkpoint holds the weights: the initial weights file is not needed again.
        model = build_model(cfg, load_weights=state is None).to(device)
        if state is not None:
            model.load_state_dict(state["model"])
        use_cl = cfg.channels_last and device.type in ("cuda", "cpu")
        if use_cl:
            model = model.to(memory_format=torch.channels_last)
        train_model = self.wrap_model(model, device)
        if self._agree is not None and not self._agree.same_everywhere(len(scan)):
            raise DataError(f"the processes found different numbers of images in {cfg.data_dir} (this one {len(scan)}): "
                            "is the folder still being copied, or not the same on every machine?")

        self.base_lr = cfg.resolved_lr(self.world_size)
        steps_per_epoch = source.steps_per_epoch
        self.total_steps = steps_per_epoch * cfg.epochs
        self.warmup_steps = int(round(cfg.resolved_warmup_epochs() * steps_per_epoch))
        optimizer = build_optimizer(model, cfg.optimizer, self.base_lr, cfg.resolved_weight_decay(), cfg.momentum)
        dtype = amp_dtype(device) if cfg.amp else None
        scaler = torch.amp.GradScaler("cuda") if dtype == torch.float16 else None

        start_epoch, start_step, global_step = 0, 0, 0
        if state is not None:
            optimizer.load_state_dict(state["optimizer"])
            if scaler is not None and state.get("scaler"):
                scaler.load_state_dict(state["scaler"])
            torch.set_rng_state(state["rng"]["torch"])
            start_epoch, start_step, global_step = state["epoch"], state["step_in_epoch"], state["global_step"]
            saved_world = int(state.get("world_size", 1))
            if saved_world != self.world_size:
                # Another number of processes: same epoch, same images done within it, new step size.
                start_step = start_step * saved_world // self.world_size
                global_step = start_epoch * steps_per_epoch + start_step
                self.emit(LogEvent(message=(
                    f"checkpoint of a {saved_world}-process run resumed on {self.world_size}: global batch "
                    f"{cfg.batch_size * saved_world} → {cfg.batch_size * self.world_size}, peak lr {self.base_lr:.4g}")))
            if start_step >= steps_per_epoch:  # stopped after the last step of an epoch
                start_epoch, start_step = start_epoch + 1, 0
            self.emit(LogEvent(message=f"resumed from {self.folder.last_checkpoint} at epoch {start_epoch + 1}, step {start_step}"))
        if self.budget is not None:
            saved = (state or {}).get("scheduler") or {}
            self.budget.used_before_s = float(saved.get("used_s", 0.0)) if saved.get("budget_s") else 0.0
            if saved.get("calibrated") and saved.get("budget_s") == self.budget.budget_s:
                self.total_steps, self.warmup_steps = int(saved["total_steps"]), int(saved["warmup_steps"])
                self.budget.calibrated = True
            else:  # a first plan from the first step's time follows; until then a long warm-up
                self.total_steps, self.warmup_steps = global_step + 10**6, 10**5
        self._position = (start_epoch, global_step)

        self.emit(RunStarted(run_dir=str(self.run_dir), device=describe(device), backbone=cfg.backbone,
                             n_images=len(scan), steps_per_epoch=steps_per_epoch, total_steps=self.total_steps,
                             start_epoch=start_epoch, start_global_step=global_step, cached=source.cached,
                             labeled=scan.labeled))
        if global_step >= self.total_steps:
            return "completed"
        evaluate = scan.labeled and cfg.eval_every and self.is_main
        knn_set = self._knn_images(scan, source) if evaluate else None
        if knn_set is not None and state is None:
            self._baseline(knn_set, len(scan.classes))

        train_model.train()
        step_times: list[float] = []
        epoch = start_epoch
        while global_step < self.total_steps:
            epoch_start = time.perf_counter()
            losses = []
            first = start_step if epoch == start_epoch else 0
            tick = time.perf_counter()
            for step, (batch, extents) in enumerate(source.batches_with_extents(epoch, first), start=first):
                stop, paused = self._control()
                if stop:
                    self._checkpoint(model, optimizer, scaler, epoch, step, global_step, "stop")
                    self._barrier()  # no rank leaves while rank 0 is still writing
                    return "stopped"
                if paused:
                    if self.budget is not None:
                        self.budget.add_pause(time.perf_counter() - tick)
                    tick = time.perf_counter()  # a pause is not step time
                lr = lr_at(global_step, self.total_steps, self.warmup_steps, self.base_lr)
                set_lr(optimizer, lr)
                loss = self.train_step(train_model, optimizer, scaler, batch, device, global_step, dtype, use_cl,
                                       extents)
                if self._agree is not None:
                    loss = self._agree.mean(loss)  # the global loss; NaN on any rank is NaN on all
                if not math.isfinite(loss):
                    self.emit(ErrorEvent(category="nan", message=(
                        f"loss became {loss} at epoch {epoch + 1}, step {step + 1}; training stopped and the last good "
                        f"checkpoint was kept. Try a lower learning rate (now {lr:.4g}) or turn off mixed precision.")))
                    return "failed"
                global_step += 1
                self._position = (epoch, global_step)
                losses.append(loss)
                now = time.perf_counter()
                step_times.append(now - tick)
                tick = now
                recent = step_times[-20:]
                sec_per_step = sum(recent) / len(recent)
                if self.budget is not None and not self.budget.calibrated:
                    self._plan_budget(step_times, global_step, steps_per_epoch)
                self.emit(StepEvent(epoch=epoch, step=step, global_step=global_step, total_steps=self.total_steps,
                                    loss=loss, lr=lr, images_per_s=cfg.batch_size * self.world_size / max(sec_per_step, 1e-9),
                                    eta_s=sec_per_step * (self.total_steps - global_step)))
                if global_step >= self.total_steps:
                    break  # a time-budgeted run ends inside its last epoch
            seconds = time.perf_counter() - epoch_start
            end_start = time.perf_counter()
            if source.decode_failures:
                self.emit(LogEvent(message=f"{source.decode_failures} file(s) failed to decode while streaming and "
                                           "were replaced by grey images (see warnings)"))
                source.decode_failures = 0
            if not losses and self._control()[0]:  # stopped at an epoch boundary
                self._checkpoint(model, optimizer, scaler, epoch, first, global_step, "stop")
                self._barrier()
                return "stopped"
            self.emit(EpochEvent(epoch=epoch, loss=float(np.mean(losses)) if losses else float("nan"), seconds=seconds,
                                 images_per_s=len(losses) * cfg.batch_size * self.world_size / max(seconds, 1e-9)))
            if knn_set is not None and (epoch + 1) % cfg.eval_every == 0 and self._knn_due(global_step):
                knn_start = time.perf_counter()
                self._online_knn(model, knn_set, len(scan.classes), device, epoch)
                self._knn_cost, self._knn_end = time.perf_counter() - knn_start, time.perf_counter()
            self._checkpoint(model, optimizer, scaler, epoch + 1, 0, global_step, "epoch")
            self._position = (epoch + 1, global_step)
            if self.budget is not None:
                self.budget.add_epoch_end(time.perf_counter() - end_start)
                if global_step < self.total_steps:
                    self._plan_budget(step_times, global_step, steps_per_epoch)
            epoch += 1
        self._barrier()
        return "completed"

    def _knn_due(self, global_step: int) -> bool:
        """Every eval_every epochs; under a time budget also at most 5 % of the time (short epochs
        would otherwise spend the user's minutes on measuring), and always at the end."""
        if self.budget is None or global_step >= self.total_steps or self._knn_cost == 0.0:
            return True
        return time.perf_counter() - self._knn_end >= 19 * self._knn_cost

    def _plan_budget(self, step_times: list[float], global_step: int, steps_per_epoch: int) -> None:
        """Lay the schedule over the time budget: after the first step, after the calibration steps
        (the first step, which allocates, is not timed) and at every epoch end. Distributed, rank 0's
        plan is every rank's."""
        timed = step_times[1:] if len(step_times) > 1 else step_times
        if len(step_times) > 1 and len(timed) < CALIBRATION_STEPS and not self.budget.calibrated:
            return
        seconds = float(np.median(timed[-50:]))
        total, warmup = self.budget.plan(global_step, seconds, steps_per_epoch)
        if self._agree is not None:
            total, warmup = self._agree.broadcast_ints(total, warmup)
        self.total_steps, self.warmup_steps = total, warmup
        if len(timed) >= CALIBRATION_STEPS:
            self.budget.calibrated = True
            self.emit(PlanEvent(total_steps=total, warmup_steps=warmup, seconds_per_step=seconds,
                                budget_s=self.budget.budget_s))

    def _barrier(self) -> None:
        if self._agree is not None:
            self._agree.barrier()

    def _control(self) -> tuple[bool, bool]:
        """Honour pause and stop between steps: (stop now, was paused). Distributed, every rank
        agrees on both, so all stop at the same step and a paused run holds no rank in a collective."""
        agree = self._agree or (lambda stop, pause: (stop, pause))
        stop, pause = agree(self._stop.is_set(), not self._running.is_set())
        if not pause or stop:
            return stop, False
        self.emit(StateEvent(state="paused"))
        while pause and not stop:
            if self._agree is None:
                self._running.wait()
            else:
                self._running.wait(0.2)  # all ranks poll together while rank 0 waits for the user
            stop, pause = agree(self._stop.is_set(), not self._running.is_set())
        if not stop:
            self.emit(StateEvent(state="running"))
        return stop, True

    def wrap_model(self, model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
        """DistributedDataParallel (with SyncBatchNorm on CUDA when configured) across processes;
        the model itself on one process."""
        if self.world_size == 1:
            return model
        from simclr_studio.distributed import StepAgreement, wrap_model

        self._agree = StepAgreement(device)
        return wrap_model(model, device, sync_bn=self.cfg.sync_bn)

    def train_step(self, model, optimizer, scaler, batch: torch.Tensor, device: torch.device, global_step: int,
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
