"""Every hook of toolkit, in one module.

A plugin is a module (or object) with functions marked by ``toolkit.hookimpl`` whose names
are the hook names below; it is discovered through the ``toolkit.plugins`` entry-point group.
Plugins may accept any subset of a hook's arguments, by name.

Calling conventions: hooks without ``firstresult`` call every implementation and return the
list of their non-``None`` results; ``firstresult`` hooks stop at the first non-``None`` one.
Implementations marked ``@hookimpl(wrapper=True)`` wrap the others (``result = yield``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    import torch
    from omegaconf import DictConfig

    from toolkit.criterions.base import Criterion
    from toolkit.models.base import EncoderDecoderModel
    from toolkit.registry import Registries
    from toolkit.training.trainer import Trainer

PROJECT = "toolkit"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec
def toolkit_register(registries: Registries) -> None:
    """Add components: tasks, models, architectures, criterions, optimizers, schedulers,
    search strategies and exit policies (``toolkit.generation.exit_policy.ExitPolicy``).

    Called once per plugin when the plugin manager starts, before any config is composed, so
    every registered config is selectable on the command line (``criterion=NAME``).

    :param registries: the session's registries; use ``registries.model.register(name, Cfg)``
        as a class decorator, or ``registries.register_architecture(model, arch)``. A plugin
        with settings registers their dataclass, ``registries.plugin_options.add(plugin_name,
        OptionsDataclass, role="model" | "training")``: ``+plugins.options.<plugin>.<key>=...``
        is then typed (unknown keys list the known ones) and its defaults are written into the
        run's config; ``role`` tells checkpoints whether the plugin is needed to rebuild the
        model or only to train it (``toolkit.checkpoint``).
    """


@hookspec
def toolkit_modify_model(model: EncoderDecoderModel, cfg: DictConfig) -> None:
    """Change a freshly built model in place (wrap layers, add heads, attach noise).

    Called after the task builds the model and before its weights are loaded from a
    checkpoint, in training and in generation alike, so added parameters are restored too.
    To leave blocks out of training forwards (LayerDrop), set ``model.encoder.skip_blocks`` or
    ``model.decoder.skip_blocks`` to a callable returning the indices of the blocks not to run
    in this forward (``toolkit.models.transformer.skipped_blocks``: consulted once per forward,
    in training mode only; a skipped block is not computed and the state-dict keys do not
    change). A plugin whose training steps may leave parameters without gradient sets
    ``model.find_unused_parameters = True``; it must skip the same blocks on every rank (derive
    the choice from the update number and ``cfg.common.seed``: a ``toolkit_train_step``
    wrapper sees ``trainer.num_updates``), which keeps DDP and FSDP in step. Modules that run
    only on some devices or dtypes declare ``supported_devices``/``supported_dtypes``
    (``toolkit.devices``).

    :param model: the model the task built.
    :param cfg: the whole run config (plugin settings live under ``cfg.plugins.options``).
    """


@hookspec
def toolkit_weights_loaded(model: EncoderDecoderModel, cfg: DictConfig, origin: str) -> None:
    """The model holds the weights it starts from; change them or its modules in place.

    Called in training after the weights are initialised (``origin="init"``) or loaded from
    ``checkpoint.finetune_from`` (``"finetune"``), and **before** the optimizer and the
    DDP/FSDP wrapper are built, so replaced parameters (codebooks instead of weights) are the
    ones trained; when a run resumes (``"resume"``) it is called on the initial weights, and
    the checkpoint's then load into the modules as changed, so a change must depend only on
    ``cfg``. ``load_for_inference`` calls it (``"inference"``) after ``load_state_dict`` and
    the plugins' state, before ``toolkit_prepare_inference``.

    :param model: the bare model (never a DDP/FSDP wrapper), on the CPU.
    :param cfg: the run config (the checkpoint's at inference, with ``plugin_options`` merged).
    :param origin: ``"init"``, ``"finetune"``, ``"resume"`` or ``"inference"``.
    """


@hookspec
def toolkit_train_begin(trainer: Trainer) -> None:
    """Called once per run after the trainer is built and a resumed checkpoint is loaded,
    before the first training step: load a teacher on ``trainer.device`` here, once.

    :param trainer: the trainer (``model``, ``module``, ``device``, ``num_updates``, ``cfg``, ``task``).
    """


@hookspec(firstresult=True)
def toolkit_train_step(
    model: EncoderDecoderModel, criterion: Criterion, sample: dict[str, Any], trainer: Trainer,
    validating: bool,
) -> tuple[torch.Tensor, float, dict[str, float]] | None:
    """Compute the loss of one batch (forward only; the trainer runs backward).

    The core implements it as ``criterion(model, sample)`` and is called last. Wrap it with
    ``@hookimpl(wrapper=True)`` to add work around it, e.g. a teacher's forward pass that puts
    soft targets into ``sample`` for a distillation criterion. Validation goes through the same
    hook (``validating=True``, under ``torch.no_grad()``, model and criterion in eval mode), so
    it reports the same loss as training.

    :param model: the model in training mode (inside autocast when mixed precision is on).
    :param criterion: the run's criterion.
    :param sample: the batch: ``net_input`` (``src_tokens`` (B, S), ``src_lengths`` (B,),
        ``prev_output_tokens`` (B, T)), ``target`` (B, T), ``ntokens``, ``nsentences``.
    :param trainer: the trainer (its ``num_updates``, ``cfg``, ``task``).
    :param validating: ``True`` when the batch is from the validation split.
    :return: ``(loss, sample_size, logging_output)``; the gradient is of ``loss / sample_size``.
    """


@hookspec
def toolkit_checkpoint_state(trainer: Trainer) -> dict[str, Any] | None:
    """Plugin state to save in a checkpoint, as ``{plugin_name: state}``.

    State must be tensors and plain containers (it is loaded with ``weights_only=True``).
    """


@hookspec
def toolkit_load_checkpoint_state(state: dict[str, Any], trainer: Trainer | None) -> None:
    """Restore what ``toolkit_checkpoint_state`` saved; ``state`` holds every plugin's entry.

    :param trainer: ``None`` when a checkpoint is loaded for inference only (``load_for_inference``).
    """


@hookspec
def toolkit_prepare_inference(model: EncoderDecoderModel, cfg: DictConfig) -> None:
    """Change a model for decoding, after a checkpoint's weights and plugin state are loaded.

    The place to prune layers, quantize weights or fuse modules for inference. The core's
    ``load_for_inference`` calls it for ``toolkit-generate``, the benchmarks and the exporters.

    :param model: the model with its trained weights, on the CPU, in eval mode.
    :param cfg: the checkpoint's run config, with the generate command's ``plugin_options``
        merged over ``cfg.plugins.options`` (e.g. a depth to prune to).
    """


@hookspec
def toolkit_on_epoch_end(trainer: Trainer, epoch: int, valid_stats: dict[str, float]) -> None:
    """Called after each epoch's validation, before checkpoints are written.

    :param valid_stats: validation metrics (``loss``, ``nll_loss``, ``ppl``, ...); a plugin
        may add entries (they are logged and may serve as ``checkpoint.best_metric``).
    """
