"""create_pipeline: wires the instcolor components; every setting comes from PipelineConfig."""
from __future__ import annotations

import json
from typing import List, Optional

import tensorflow_model_analysis as tfma
from tfx import v1 as tfx

from components.ablation_gallery.component import AblationGallery
from components.fusion_trainer.component import FusionTrainer
from components.voc_example_gen.component import VocExampleGen
from pipeline import configs


def eval_config(config: configs.PipelineConfig) -> tfma.EvalConfig:
  """Colour metrics (trainer/metrics.py) on the val split; PSNR decides the blessing."""
  metric_args = json.dumps({'color_space': config.color_space})

  def metric(class_name, threshold=None, **extra):
    return tfma.MetricConfig(class_name=class_name, module=configs.METRICS_MODULE,
                             config=json.dumps({**json.loads(metric_args), **extra}),
                             threshold=threshold)

  psnr_threshold = tfma.MetricThreshold(
      value_threshold=tfma.GenericValueThreshold(lower_bound={'value': config.psnr_lower_bound}),
      change_threshold=tfma.GenericChangeThreshold(
          direction=tfma.MetricDirection.HIGHER_IS_BETTER,
          absolute={'value': -config.max_psnr_drop}))
  return tfma.EvalConfig(
      model_specs=[tfma.ModelSpec(signature_name='evaluate', prediction_key='prediction',
                                  label_key='label',
                                  preprocessing_function_names=['transform_features'])],
      slicing_specs=[tfma.SlicingSpec()],
      metrics_specs=[tfma.MetricsSpec(metrics=[
          metric('PSNR', psnr_threshold),
          metric('SSIM'),
          metric('InstancePSNR'),
          metric('Colorfulness'),
          metric('Colorfulness', name='colorfulness_truth', source='label'),
          metric('ColorfulnessGap'),
      ])])


def create_pipeline(config: configs.PipelineConfig, data_root: str, pipeline_root: str,
                    metadata_connection_config=None,
                    beam_pipeline_args: Optional[List[str]] = None,
                    enable_cache: bool = True,
                    serving_model_dir: Optional[str] = None,
                    schema_dir: str = configs.SCHEMA_DIR) -> tfx.dsl.Pipeline:
  """The instcolor pipeline. `schema_dir` is where schema.pbtxt is when the pipeline runs
  (inside the container image for Kubeflow / Vertex)."""
  example_gen = VocExampleGen(data_root=data_root, split_mode=config.split_mode,
                              ingest_options=config.ingest_options())
  statistics_gen = tfx.components.StatisticsGen(examples=example_gen.outputs['examples'])
  schema_gen = tfx.components.ImportSchemaGen(schema_file=f'{schema_dir}/schema.pbtxt')
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

  model_resolver = tfx.dsl.Resolver(
      strategy_class=tfx.dsl.experimental.LatestBlessedModelStrategy,
      model=tfx.dsl.Channel(type=tfx.types.standard_artifacts.Model),
      model_blessing=tfx.dsl.Channel(type=tfx.types.standard_artifacts.ModelBlessing)).with_id(
          'latest_blessed_model_resolver')
  evaluator = tfx.components.Evaluator(
      examples=example_gen.outputs['examples'],
      model=fusion_trainer.outputs['model'],
      baseline_model=model_resolver.outputs['model'],
      example_splits=['val'],
      eval_config=eval_config(config))
  pusher = tfx.components.Pusher(
      model=fusion_trainer.outputs['model'],
      model_blessing=evaluator.outputs['blessing'],
      push_destination=tfx.proto.PushDestination(
          filesystem=tfx.proto.PushDestination.Filesystem(
              base_directory=serving_model_dir or f'{pipeline_root}/serving_model')))

  ablation = AblationGallery(
      examples=example_gen.outputs['examples'], full_model=full_trainer.outputs['model'],
      fusion_model=fusion_trainer.outputs['model'], color_space=config.color_space)

  components = [example_gen, statistics_gen, schema_gen, example_validator, transform,
                full_trainer, instance_trainer, fusion_trainer, model_resolver, evaluator, pusher,
                ablation]
  return tfx.dsl.Pipeline(
      pipeline_name=configs.PIPELINE_NAME,
      pipeline_root=pipeline_root,
      components=components,
      enable_cache=enable_cache,
      metadata_connection_config=metadata_connection_config,
      beam_pipeline_args=beam_pipeline_args)
