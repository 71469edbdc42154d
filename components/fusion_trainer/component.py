"""FusionTrainer: the stock Trainer plus a `full_model` input channel.

Stage 3 needs both colour nets. A Trainer's `base_model` carries one Model, so this component adds a
second channel rather than having stage 2 copy stage 1's weights into its own artifact: ML Metadata
then records both upstream models as inputs of the fusion stage, and each artifact holds only what
its own stage produced.
"""
from __future__ import annotations

from typing import Any, Dict, Optional

from tfx import types
from tfx.components import Trainer
from tfx.dsl.components.base import base_component, executor_spec
from tfx.proto import trainer_pb2
from tfx.types import standard_artifacts, standard_component_specs
from tfx.types.component_spec import ChannelParameter
from tfx.utils import json_utils

from components.fusion_trainer import executor
from trainer.names import FULL_MODEL_KEY


class FusionTrainerSpec(standard_component_specs.TrainerSpec):
  INPUTS = {
      **standard_component_specs.TrainerSpec.INPUTS,
      FULL_MODEL_KEY: ChannelParameter(type=standard_artifacts.Model),
  }


class FusionTrainer(Trainer):
  """Trainer(run_fn=..., base_model=<instance model>, full_model=<full model>, ...)."""

  SPEC_CLASS = FusionTrainerSpec
  EXECUTOR_SPEC = executor_spec.ExecutorClassSpec(executor.Executor)

  def __init__(self, examples: types.BaseChannel, transform_graph: types.BaseChannel,
               base_model: types.BaseChannel, full_model: types.BaseChannel, run_fn: str,
               train_args: Optional[trainer_pb2.TrainArgs] = None,
               eval_args: Optional[trainer_pb2.EvalArgs] = None,
               custom_config: Optional[Dict[str, Any]] = None):
    spec = FusionTrainerSpec(
        examples=examples,
        transform_graph=transform_graph,
        base_model=base_model,
        full_model=full_model,
        train_args=train_args or trainer_pb2.TrainArgs(),
        eval_args=eval_args or trainer_pb2.EvalArgs(),
        run_fn=run_fn,
        custom_config=json_utils.dumps(custom_config),
        model=types.Channel(type=standard_artifacts.Model),
        model_run=types.Channel(type=standard_artifacts.ModelRun))
    # Trainer.__init__ would build a plain TrainerSpec; the shared base does the rest.
    base_component.BaseComponent.__init__(self, spec=spec)


class VertexFusionTrainer(FusionTrainer):
  """FusionTrainer(...) that trains in a Vertex AI custom job (custom_config carries the job: see
  pipeline/vertex.py), as tfx.extensions.google_cloud_ai_platform.Trainer does for the others."""

  EXECUTOR_SPEC = executor_spec.ExecutorClassSpec(executor.VertexExecutor)
