"""create_pipeline: wires the instcolor components; every setting comes from PipelineConfig."""
from __future__ import annotations

from typing import List, Optional

from tfx import v1 as tfx

from components.fusion_trainer.component import FusionTrainer
from components.voc_example_gen.component import VocExampleGen
from pipeline import configs


def create_pipeline(config: configs.PipelineConfig, data_root: str, pipeline_root: str,
                    metadata_connection_config=None,
                    beam_pipeline_args: Optional[List[str]] = None,
                    enable_cache: bool = True) -> tfx.dsl.Pipeline:
  example_gen = VocExampleGen(data_root=data_root, split_mode=config.split_mode,
                              ingest_options=config.ingest_options())
  statistics_gen = tfx.components.StatisticsGen(examples=example_gen.outputs['examples'])
  schema_gen = tfx.components.ImportSchemaGen(schema_file=f'{configs.SCHEMA_DIR}/schema.pbtxt')
  example_validator = tfx.components.ExampleValidator(
      statistics=statistics_gen.outputs['statistics'], schema=schema_gen.outputs['schema'])
  transform = tfx.components.Transform(
      examples=example_gen.outputs['examples'],
      schema=schema_gen.outputs['schema'],
      preprocessing_fn=configs.PREPROCESSING_FN,
      custom_config=config.transform_config(),
      # No analyzers need statistics, and they would decode every image twice more.
      disable_statistics=True)

  def trainer_args(stage):
    return dict(examples=transform.outputs['transformed_examples'],
                transform_graph=transform.outputs['transform_graph'],
                run_fn=configs.RUN_FNS[stage],
                train_args=tfx.proto.TrainArgs(splits=['train']),
                eval_args=tfx.proto.EvalArgs(splits=['val']),
                custom_config=config.trainer_config(stage))

  full_trainer = tfx.components.Trainer(**trainer_args('full')).with_id('full_trainer')
  instance_trainer = tfx.components.Trainer(
      base_model=full_trainer.outputs['model'], **trainer_args('instance')).with_id(
          'instance_trainer')
  fusion_trainer = FusionTrainer(
      base_model=instance_trainer.outputs['model'], full_model=full_trainer.outputs['model'],
      **trainer_args('fusion')).with_id('fusion_trainer')

  components = [example_gen, statistics_gen, schema_gen, example_validator, transform,
                full_trainer, instance_trainer, fusion_trainer]
  return tfx.dsl.Pipeline(
      pipeline_name=configs.PIPELINE_NAME,
      pipeline_root=pipeline_root,
      components=components,
      enable_cache=enable_cache,
      metadata_connection_config=metadata_connection_config,
      beam_pipeline_args=beam_pipeline_args)
