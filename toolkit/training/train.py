"""``train(cfg)``: the whole training run, top to bottom, free of hydra so tests call it."""

from __future__ import annotations

import logging
import signal
import threading
import time
from contextlib import closing, contextmanager
from pathlib import Path
from typing import Any, Iterator

import torch
from omegaconf import DictConfig, OmegaConf

import toolkit
from toolkit.checkpoint import initialize_from, load_checked, plugin_records
from toolkit.config import resolve_plugin_options, save_config, validate_train_config
from toolkit.plugins import PluginSession, get_plugins
from toolkit.training.checkpoint import BEST, CheckpointManager, rng_state, set_rng_state
from toolkit.training.distributed import DistributedContext, init_distributed, shutdown
from toolkit.training.progress import Meter, Reporter, summarize
from toolkit.training.run_folder import hold_run_folder
from toolkit.training.trainer import Trainer

logger = logging.getLogger("toolkit.train")


def train(cfg: DictConfig, plugins: PluginSession | None = None) -> dict[str, Any]:
    """Train as ``cfg`` says, resuming from ``checkpoint_last.pt`` when there is one.

    Under torchrun (WORLD_SIZE > 1) it trains with DDP, or FSDP (common.distributed_strategy); see
    ``toolkit.training.distributed``.

    :return: ``{"num_updates", "epoch", "train_losses" (per update), "valid" (per epoch),
        "interrupted", "save_dir", "model"}``.
    """
    validate_train_config(cfg)
    plugins = plugins or get_plugins()
    plugins.require(cfg.plugins.require, why="the config (plugins.require)")
    plugins.block(cfg.plugins.block, cfg)
    plugins.require_options_owners(cfg.plugins.options, "the config")
    resolve_plugin_options(cfg.plugins.options, plugins.registries, "plugins.options")
    if cfg.common.threads:
        torch.set_num_threads(cfg.common.threads)
    torch.manual_seed(cfg.common.seed)
    distributed = init_distributed(cfg.common.device)
    try:
        with hold_run_folder(cfg.checkpoint.save_dir, distributed.is_master):  # before touching the folder
            return _train(cfg, plugins, distributed)
    finally:
        shutdown(distributed)


def _train(cfg: DictConfig, plugins: PluginSession, distributed: DistributedContext) -> dict[str, Any]:
    master = distributed.is_master  # only rank 0 writes checkpoints, logs and tensorboard
    save_dir = Path(cfg.checkpoint.save_dir)
    task = plugins.registries.task.build(cfg.task, cfg)
    task.check_splits([cfg.dataset.train_subset, *([cfg.dataset.valid_subset] if cfg.dataset.valid_subset else [])])
    if master:  # preprocess once; the other ranks then find the data up to date
        save_dir.mkdir(parents=True, exist_ok=True)
        task.prepare()
    distributed.barrier()
    if not master:
        task.prepare()
    checkpoints = CheckpointManager(save_dir, cfg.checkpoint.keep_last_epochs, cfg.checkpoint.maximize_best_metric)
    resuming = cfg.checkpoint.resume and checkpoints.last_path.exists()
    model = _build_model(cfg, task, plugins, resuming)
    criterion = task.build_criterion(plugins.registries, cfg.criterion)
    trainer = Trainer(cfg, task, model, criterion, plugins, distributed)
    logger.info("model %s: %d parameters; criterion %s; %s on %s", cfg.model.get("arch") or cfg.model._name,
                sum(p.numel() for p in model.parameters()), cfg.criterion._name, cfg.common.precision,
                trainer.device)

    max_positions = min(cfg.dataset.max_positions, *model.max_positions())
    shard = (distributed.rank, distributed.world_size)
    train_itr = task.batch_iterator(task.load_dataset(cfg.dataset.train_subset, max_positions), True, shard,
                                    pin_memory=trainer.device.type == "cuda")
    valid_data = _valid_data(cfg, task, max_positions)
    if resuming:
        _resume(checkpoints, trainer, train_itr, plugins)
    if master:
        save_config(cfg, save_dir / "config.yaml")
    plugins.hook.toolkit_train_begin(trainer=trainer)
    history = _TrainingLoop(cfg, trainer, plugins, checkpoints, train_itr, valid_data).run()
    if master and not cfg.checkpoint.no_save:
        _say_what_next(cfg, checkpoints)
    return history


class _TrainingLoop:
    """Epochs of updates until ``optimization.max_update``, ``max_epoch`` or ``max_time_minutes``
    (or a signal), validating and saving at each epoch's end; every rank stops at the same update."""

    def __init__(self, cfg: DictConfig, trainer: Trainer, plugins: PluginSession, checkpoints: CheckpointManager,
                 train_itr, valid_data):
        self.cfg, self.trainer, self.plugins, self.checkpoints = cfg, trainer, plugins, checkpoints
        self.train_itr, self.valid_data = train_itr, valid_data
        self.distributed = trainer.distributed
        self.shard = (self.distributed.rank, self.distributed.world_size)
        master = self.distributed.is_master
        self.reporter = Reporter(cfg.common.log_format if master else "none",
                                 cfg.common.tensorboard_dir if master else None)
        self.history: dict[str, Any] = {"train_losses": [], "valid": [], "interrupted": False,
                                        "save_dir": str(checkpoints.save_dir)}
        self.start = time.monotonic()

    def run(self) -> dict[str, Any]:
        """Train to the end; the history ``train`` returns."""
        trainer, train_itr = self.trainer, self.train_itr
        with _stop_on_signals() as stop:
            while not self.done():
                epoch = train_itr.epoch
                meter, stop_reason = self.train_epoch(stop)
                if stop_reason == "signal" and not train_itr.end_of_epoch():
                    logger.warning("stopping on a signal at update %d", trainer.num_updates)
                    self.save(end_of_epoch=False)
                    self.history["interrupted"] = True
                    break
                self.end_epoch(epoch, meter)
                if stop_reason == "signal":  # with the epoch's last batch: the epoch was completed first
                    logger.warning("stopping on a signal at the end of epoch %d (update %d)", epoch,
                                   trainer.num_updates)
                    self.history["interrupted"] = True
                    break
        self.reporter.close()
        epoch = train_itr.epoch - 1 if train_itr.end_of_epoch() else train_itr.epoch  # the last one trained
        logger.info("done training: %d updates, epoch %d", trainer.num_updates, epoch)
        self.history.update(num_updates=trainer.num_updates, epoch=epoch, model=trainer.module,
                            train_losses=[float(loss) for loss in self.history["train_losses"]])
        return self.history

    def train_epoch(self, stop: threading.Event) -> tuple[Meter, str | None]:
        """Updates until the epoch ends or training must stop: the epoch's meter, and why it
        stopped early ("signal", "time") or None."""
        cfg, trainer, train_itr, opt = self.cfg, self.trainer, self.train_itr, self.cfg.optimization
        epoch, meter, window = train_itr.epoch, Meter(), Meter()
        reduce = trainer.criterion.reduce_metrics
        with closing(train_itr.next_epoch_itr()) as epoch_batches:  # stops its prefetching thread
            for samples in _groups(self.reporter.iterate(epoch_batches, len(train_itr), epoch), opt.update_freq):
                logging_output = trainer.train_step(samples)
                if logging_output is not None:
                    meter.add(logging_output)
                    window.add(logging_output)
                    # kept as tensors: reading them now would wait for the GPU at every update
                    self.history["train_losses"].append(logging_output["loss"] / logging_output["ntokens"])
                if cfg.common.log_interval and trainer.num_updates % cfg.common.log_interval == 0 and window.count:
                    self.reporter.log("train_inner", _with_progress(summarize(window, reduce), epoch, trainer),
                                      trainer.num_updates)
                    window.reset()
                if self.distributed.any(stop.is_set() or self.out_of_time()):  # every rank stops at the same update
                    return meter, "signal" if self.distributed.any(stop.is_set()) else "time"
                if opt.max_update and trainer.num_updates >= opt.max_update:
                    break
                save_every = cfg.checkpoint.save_interval_updates
                if save_every and trainer.num_updates % save_every == 0:
                    self.save(end_of_epoch=False)
        return meter, None

    def end_epoch(self, epoch: int, meter: Meter) -> None:
        """Log the epoch, validate when due (and at the end), save."""
        cfg, trainer = self.cfg, self.trainer
        end_of_epoch = self.train_itr.end_of_epoch()
        self.reporter.log("train", _with_progress(summarize(meter, trainer.criterion.reduce_metrics), epoch, trainer),
                          trainer.num_updates)
        valid_stats, finishing = None, self.done()
        if self.valid_data is not None and (end_of_epoch and epoch % cfg.optimization.validate_interval == 0
                                            or finishing):
            valid_stats = validate(trainer, trainer.task, self.valid_data, self.shard)
            if cfg.validation.bleu:
                valid_stats["bleu"] = validation_bleu(cfg, trainer, trainer.task, self.plugins)
            self.plugins.hook.toolkit_on_epoch_end(trainer=trainer, epoch=epoch, valid_stats=valid_stats)
            self.reporter.log("valid", _with_progress(valid_stats, epoch, trainer), trainer.num_updates)
            self.history["valid"].append(valid_stats)
        self.save(end_of_epoch=end_of_epoch, valid_stats=valid_stats)

    def out_of_time(self) -> bool:
        minutes = self.cfg.optimization.max_time_minutes
        return bool(minutes and time.monotonic() - self.start >= 60 * minutes)

    def done(self) -> bool:
        """Whether training is over: the same answer on every rank."""
        opt, trainer = self.cfg.optimization, self.trainer
        return self.distributed.any(bool(opt.max_update and trainer.num_updates >= opt.max_update) or bool(
            opt.max_epoch and self.train_itr.epoch > opt.max_epoch) or self.out_of_time())

    def save(self, end_of_epoch: bool, valid_stats: dict[str, float] | None = None) -> None:
        """Write the checkpoints due (rank 0; every rank contributes its RNG state)."""
        cfg = self.cfg
        if cfg.checkpoint.no_save:
            return
        # every rank: the RNG states are gathered
        state = _checkpoint_state(cfg, self.trainer, self.train_itr, self.plugins)
        if not self.distributed.is_master:
            return
        metric = valid_stats.get(cfg.checkpoint.best_metric) if valid_stats else None
        if valid_stats and metric is None:  # a misspelt name would otherwise never write a best checkpoint
            logger.warning("checkpoint.best_metric=%s is not among this validation's metrics (%s): no %s is "
                           "written for it", cfg.checkpoint.best_metric, ", ".join(sorted(valid_stats)), BEST)
        epoch = self.train_itr.epoch - 1 if end_of_epoch else None
        written = self.checkpoints.save(state, epoch, metric)
        logger.info("saved %s (update %d)", ", ".join(p.name for p in written), self.trainer.num_updates)


def validate(trainer: Trainer, task, dataset, shard: tuple[int, int] = (0, 1)) -> dict[str, float]:
    """Loss, nll and perplexity on a whole split (each rank scores its share)."""
    meter = Meter()
    itr = task.batch_iterator(dataset, train=False, shard=shard)
    count = len(itr)
    for sample in itr.next_epoch_itr():
        meter.add(trainer.valid_step(sample))
    if trainer.sharded and count:  # every sharded forward is a collective: ranks short of batches repeat one
        for _ in range(max(trainer.distributed.all_gather(count)) - count):
            trainer.valid_step(sample)
    totals = meter.totals()
    if trainer.distributed.enabled:
        totals = trainer.distributed.sum_metrics(totals, trainer.device)
    return trainer.criterion.reduce_metrics(totals)


def validation_bleu(cfg: DictConfig, trainer: Trainer, task, plugins: PluginSession) -> float:
    """sacreBLEU of the model's translations of the valid split's source text."""
    from toolkit.data.preprocess import read_lines
    from toolkit.generation.translator import Translator, generation_config
    from toolkit.scoring.bleu import score

    data, settings = task.data_dir(), task.settings()
    sources = read_lines(data / f"{cfg.dataset.valid_subset}.{settings.source_lang}")
    references = read_lines(data / f"{cfg.dataset.valid_subset}.{settings.target_lang}")
    translator = Translator(task, trainer.module, generation_config(cfg.validation.generation), plugins,
                            max_sentences=cfg.validation.max_sentences)
    with trainer.autocast():
        hypotheses = [t.text for t in translator.translate(sources)]
    return score(hypotheses, references).bleu


def _checkpoint_state(cfg: DictConfig, trainer: Trainer, train_itr, plugins: PluginSession) -> dict[str, Any]:
    plugin_state: dict[str, Any] = {}
    for result in plugins.hook.toolkit_checkpoint_state(trainer=trainer):
        plugin_state.update(result)
    return {
        **trainer.state_dict(),
        "cfg": OmegaConf.to_container(cfg, resolve=True),
        "task": trainer.task.state_dict(),
        "iterator": train_itr.state_dict(),
        "rng": trainer.distributed.all_gather(rng_state()),  # one per rank
        "plugins": plugin_records(cfg, plugins),
        "plugin_state": plugin_state,
        "toolkit_version": toolkit.__version__,
    }


def _valid_data(cfg: DictConfig, task, max_positions: int) -> Any:
    """The validation split, or None (said in the log) when ``dataset.valid_subset`` is null."""
    if cfg.dataset.valid_subset is None:
        logger.warning("training without validation (dataset.valid_subset=null): no validation loss, and no "
                       "%s (pick a checkpoint yourself)", BEST)
        return None
    return task.load_dataset(cfg.dataset.valid_subset, max_positions)


def _build_model(cfg: DictConfig, task, plugins: PluginSession, resuming: bool) -> torch.nn.Module:
    """The model as built and changed by plugins, holding the weights it starts from (fine-tuned
    ones unless resuming), before the trainer builds the optimizer and the DDP/FSDP wrapper."""
    model = task.build_model(plugins.registries, cfg.model)
    plugins.hook.toolkit_modify_model(model=model, cfg=cfg)
    origin = "resume" if resuming else "finetune" if cfg.checkpoint.finetune_from else "init"
    if origin == "finetune":
        initialize_from(Path(cfg.checkpoint.finetune_from), model, task, plugins, cfg.checkpoint.finetune_strict)
    plugins.hook.toolkit_weights_loaded(model=model, cfg=cfg, origin=origin)
    return model


def _say_what_next(cfg: DictConfig, checkpoints: CheckpointManager) -> None:
    """End a run by naming its best checkpoint and the command that translates with it."""
    best = checkpoints.save_dir / BEST
    if not best.exists():
        best = checkpoints.last_path
    if not best.exists():
        return
    metric = f" (valid {cfg.checkpoint.best_metric} {checkpoints.best:.4g})" if checkpoints.best is not None else ""
    logger.info("best checkpoint: %s%s; translate the test split with:\n    toolkit-generate path=%s split=test "
                "generation.beam=5", best, metric, best)


def _resume(checkpoints: CheckpointManager, trainer: Trainer, train_itr, plugins: PluginSession) -> None:
    path = checkpoints.last_path
    state = load_checked(path, plugins)
    trainer.load_state_dict(state)
    train_itr.load_state_dict(state["iterator"])
    plugins.hook.toolkit_load_checkpoint_state(state=state.get("plugin_state", {}), trainer=trainer)
    rng = state["rng"]  # a list with one state per rank
    set_rng_state(rng[trainer.distributed.rank] if len(rng) == trainer.distributed.world_size else rng[0])
    checkpoints.best = state.get("best_metric")
    if trainer.distributed.is_master:  # a kill between the writes of its save: complete the set
        checkpoints.reconcile(state)
    logger.info("resumed from %s: update %d, epoch %d, batch %d", path, trainer.num_updates,
                train_itr.epoch, train_itr.iterations_in_epoch)


def _with_progress(stats: dict[str, float], epoch: int, trainer: Trainer) -> dict[str, float]:
    return {"epoch": epoch, "num_updates": trainer.num_updates, **stats}


def _groups(items: Iterator[Any], size: int) -> Iterator[list[Any]]:
    group = []
    for item in items:
        group.append(item)
        if len(group) == size:
            yield group
            group = []
    if group:
        yield group


@contextmanager
def _stop_on_signals() -> Iterator[threading.Event]:
    """SIGINT/SIGTERM set an event the loop checks after each update (a second one aborts)."""
    stop = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield stop
        return

    def handler(signum, frame):
        if stop.is_set():
            raise KeyboardInterrupt
        stop.set()

    previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield stop
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
