"""create_pipeline: wires the instcolor components; every setting comes from PipelineConfig.

The builders below make one component each (the benches reuse them); create_pipeline only wires.
"""
from __future__ import annotations

import json
from typing import Dict, List, Optional, Sequence, Union

import tensorflow_model_analysis as tfma
from tfx import v1 as tfx

from components.ablation_gallery.component import AblationGallery
from components.fusion_trainer.component import FusionTrainer, VertexFusionTrainer
from components.voc_example_gen.component import VocExampleGen
from pipeline import configs
from pipeline.vertex import VertexTraining
from trainer import names
from trainer.config import PipelineConfig


def eval_config(config: PipelineConfig) -> tfma.EvalConfig:
  """Colour metrics (trainer/metrics.py) on the val split; PSNR and its gain over the gray
  baseline decide the blessing."""

  def metric(class_name, threshold=None, **extra):
    return tfma.MetricConfig(class_name=class_name, module=configs.METRICS_MODULE,
                             config=json.dumps({'color_space': config.color_space, **extra}),
                             threshold=threshold)

  psnr_threshold = tfma.MetricThreshold(
      value_threshold=tfma.GenericValueThreshold(lower_bound={'value': config.psnr_lower_bound}),
      change_threshold=tfma.GenericChangeThreshold(
          direction=tfma.MetricDirection.HIGHER_IS_BETTER,
          absolute={'value': -config.max_psnr_drop}))
  # A model that outputs no colour scores exactly 0 here, and is never blessed.
  gain_threshold = tfma.MetricThreshold(value_threshold=tfma.GenericValueThreshold(
      lower_bound={'value': config.min_psnr_gain}))
  return tfma.EvalConfig(
      model_specs=[tfma.ModelSpec(signature_name='evaluate', prediction_key='prediction',
                                  label_key='label',
                                  preprocessing_function_names=['transform_features'])],
      slicing_specs=[tfma.SlicingSpec()],
      metrics_specs=[tfma.MetricsSpec(metrics=[
          metric('PSNR', psnr_threshold),
          metric('PSNRGainOverGray', gain_threshold),
          metric('SSIM'),
          metric('InstancePSNR'),
          metric('Colorfulness'),
          metric('Colorfulness', name='colorfulness_truth', source='label'),
          metric('ColorfulnessGap'),
      ])])


def example_gen(config: PipelineConfig, data_root: Union[str, Sequence[str]]) -> VocExampleGen:
  return VocExampleGen(data_root=data_root, split_mode=config.split_mode,
                       ingest_options=config.ingest_options()).with_id(names.EXAMPLE_GEN)


def schema_gen(schema_dir: str) -> tfx.components.ImportSchemaGen:
  return tfx.components.ImportSchemaGen(schema_file=f'{schema_dir}/schema.pbtxt').with_id(
      names.SCHEMA_GEN)


def transform(config: PipelineConfig, examples: VocExampleGen,
              schema: tfx.components.ImportSchemaGen) -> tfx.components.Transform:
  return tfx.components.Transform(
      examples=examples.outputs['examples'],
      schema=schema.outputs['schema'],
      preprocessing_fn=configs.PREPROCESSING_FN,
      custom_config=config.transform_options().to_dict(),
      # No analyzers need statistics, and they would decode every image twice more.
      disable_statistics=True).with_id(names.TRANSFORM)


def trainers(config: PipelineConfig, transformed: tfx.components.Transform,
             vertex_training: Optional[VertexTraining] = None
             ) -> Dict[str, tfx.components.Trainer]:
  """The three chained Trainers: full -> instance (base_model) -> fusion (base_model, full_model);
  with `vertex_training`, each one trains in a Vertex AI custom job."""

  def trainer_args(stage):
    custom_config = config.trainer_options(stage).to_dict()
    if vertex_training:
      custom_config.update(vertex_training.custom_config(stage))
    return dict(examples=transformed.outputs['transformed_examples'],
                transform_graph=transformed.outputs['transform_graph'],
                run_fn=configs.RUN_FNS[stage],
                train_args=tfx.proto.TrainArgs(splits=['train']),
                eval_args=tfx.proto.EvalArgs(splits=['val']),
                custom_config=custom_config)

  trainer, fusion_trainer = ((tfx.extensions.google_cloud_ai_platform.Trainer,
                              VertexFusionTrainer) if vertex_training
                             else (tfx.components.Trainer, FusionTrainer))
  full = trainer(**trainer_args(names.FULL))
  instance = trainer(**{names.BASE_MODEL_KEY: full.outputs['model']},
                     **trainer_args(names.INSTANCE))
  fusion = fusion_trainer(**{names.BASE_MODEL_KEY: instance.outputs['model'],
                             names.FULL_MODEL_KEY: full.outputs['model']},
                          **trainer_args(names.FUSION))
  stages = {names.FULL: full, names.INSTANCE: instance, names.FUSION: fusion}
  return {stage: component.with_id(names.TRAINERS[stage]) for stage, component in stages.items()}


def create_pipeline(config: PipelineConfig, data_root: Union[str, Sequence[str]],
                    pipeline_root: str,
                    metadata_connection_config=None,
                    beam_pipeline_args: Optional[List[str]] = None,
                    enable_cache: bool = True,
                    serving_model_dir: Optional[str] = None,
                    schema_dir: str = configs.SCHEMA_DIR,
                    vertex_training: Optional[VertexTraining] = None) -> tfx.dsl.Pipeline:
  """The instcolor pipeline on one data folder or several (`data_root`). `schema_dir` is where
  schema.pbtxt is when the pipeline runs (inside the container image for Kubeflow / Vertex);
  `vertex_training` runs the Trainers as Vertex AI custom jobs (pipeline/vertex.py)."""
  examples = example_gen(config, data_root)
  statistics = tfx.components.StatisticsGen(examples=examples.outputs['examples']).with_id(
      names.STATISTICS_GEN)
  schema = schema_gen(schema_dir)
  validator = tfx.components.ExampleValidator(
      statistics=statistics.outputs['statistics'], schema=schema.outputs['schema']).with_id(
          names.EXAMPLE_VALIDATOR)
  transformed = transform(config, examples, schema)
  stages = trainers(config, transformed, vertex_training)
  full_model = stages[names.FULL].outputs['model']
  fusion_model = stages[names.FUSION].outputs['model']

  model_resolver = tfx.dsl.Resolver(
      strategy_class=tfx.dsl.experimental.LatestBlessedModelStrategy,
      model=tfx.dsl.Channel(type=tfx.types.standard_artifacts.Model),
      model_blessing=tfx.dsl.Channel(type=tfx.types.standard_artifacts.ModelBlessing)).with_id(
          names.RESOLVER)
  evaluator = tfx.components.Evaluator(
      examples=examples.outputs['examples'],
      model=fusion_model,
      baseline_model=model_resolver.outputs['model'],
      example_splits=['val'],
      eval_config=eval_config(config)).with_id(names.EVALUATOR)
  pusher = tfx.components.Pusher(
      model=fusion_model,
      model_blessing=evaluator.outputs['blessing'],
      push_destination=tfx.proto.PushDestination(
          filesystem=tfx.proto.PushDestination.Filesystem(
              base_directory=serving_model_dir or f'{pipeline_root}/serving_model'))).with_id(
                  names.PUSHER)
  ablation = AblationGallery(
      examples=examples.outputs['examples'], full_model=full_model, fusion_model=fusion_model,
      color_space=config.color_space).with_id(names.ABLATION)

  components = [examples, statistics, schema, validator, transformed, *stages.values(),
                model_resolver, evaluator, pusher, ablation]
  return tfx.dsl.Pipeline(
      pipeline_name=configs.PIPELINE_NAME,
      pipeline_root=pipeline_root,
      components=components,
      enable_cache=enable_cache,
      metadata_connection_config=metadata_connection_config,
      beam_pipeline_args=beam_pipeline_args)
