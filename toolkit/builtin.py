"""The core's own components, registered through the same hook a third-party plugin uses."""

from __future__ import annotations

from typing import Any

from toolkit.hooks import hookimpl
from toolkit.registry import Registries


@hookimpl
def toolkit_register(registries: Registries) -> None:
    from toolkit.generation import search
    from toolkit.generation.exit_policy import FixedDepth, FixedDepthConfig
    from toolkit.criterions.label_smoothed_cross_entropy import LabelSmoothedCEConfig, LabelSmoothedCrossEntropy
    from toolkit.models.architectures import ARCHITECTURES
    from toolkit.models.transformer import TransformerConfig, TransformerModel
    from toolkit.optim.adam import Adam, AdamConfig
    from toolkit.optim import lr_scheduler as sched
    from toolkit.tasks.translation import TranslationConfig, TranslationTask

    registries.task.add("translation", TranslationTask, TranslationConfig)
    registries.model.add("transformer", TransformerModel, TransformerConfig)
    for name, preset in ARCHITECTURES.items():
        registries.register_architecture("transformer", name)(preset)
    registries.criterion.add("label_smoothed_cross_entropy", LabelSmoothedCrossEntropy, LabelSmoothedCEConfig)
    registries.optimizer.add("adam", Adam, AdamConfig)
    registries.lr_scheduler.add("inverse_sqrt", sched.InverseSqrtSchedule, sched.InverseSqrtConfig)
    registries.lr_scheduler.add("fixed", sched.FixedSchedule, sched.FixedConfig)
    registries.lr_scheduler.add("cosine", sched.CosineSchedule, sched.CosineConfig)
    registries.search.add("beam", search.BeamSearch, search.BeamSearchConfig)
    registries.search.add("sampling", search.Sampling, search.SamplingConfig)
    registries.exit_policy.add("fixed_depth", FixedDepth, FixedDepthConfig)


@hookimpl(trylast=True)
def toolkit_train_step(model, criterion, sample: dict[str, Any]) -> Any:
    """The default loss computation, in training and validation: the criterion on the model."""
    return criterion(model, sample)
