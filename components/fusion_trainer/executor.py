"""GenericExecutor that also hands the `full_model` input to run_fn (as custom_config['full_model']),
and its Vertex AI form: TFX's Google Cloud AI Platform Trainer executor starting a custom job whose
replicas run it."""
from __future__ import annotations

from typing import Any, Dict, List

from tfx import types
from tfx.components.trainer import executor as trainer_executor
from tfx.extensions.google_cloud_ai_platform.trainer import executor as ai_platform_executor
from tfx.types import artifact_utils
from tfx.utils import path_utils

from trainer.names import FULL_MODEL_KEY  # the channel name doubles as the custom_config key


class Executor(trainer_executor.GenericExecutor):

  def _GetFnArgs(self, input_dict: Dict[str, List[types.Artifact]],
                 output_dict: Dict[str, List[types.Artifact]],
                 exec_properties: Dict[str, Any]):
    fn_args = super()._GetFnArgs(input_dict, output_dict, exec_properties)
    full_model_uri = artifact_utils.get_single_uri(input_dict[FULL_MODEL_KEY])
    fn_args.custom_config = {**(fn_args.custom_config or {}),
                             FULL_MODEL_KEY: path_utils.serving_model_path(full_model_uri)}
    return fn_args


class VertexExecutor(ai_platform_executor.GenericExecutor):

  def _GetExecutorClass(self):
    return Executor
