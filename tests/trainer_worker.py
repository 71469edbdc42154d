"""One Trainer process, as a training job's replica runs it: TFX's own executor for one stage (the
FusionTrainer's for fusion) on the outputs of a finished pipeline run (its Transform outputs and,
for the later stages, its upstream Trainer models), with this process's TF_CONFIG (set by the
caller) and the stage's custom_config changed by the flags below.

  python -m tests.trainer_worker PIPELINE_ROOT OUT_DIR [--stage full] [--distribution multi_worker]
      [--logical-cpus N] [--worker-timeout 20] [--steps 4] [--epochs 1] [--batch-size 2] [--seed 0]
      [--init-model DIR] [--precision float32]

Writes OUT_DIR/model and OUT_DIR/model_run (the Trainer's two output artifacts; every worker is
given the same ones, as in a Vertex job) and prints 'TRAINER DONE' when the executor returns.
"""
from __future__ import annotations

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import pipeline  # noqa: F401,E402  (sets the process up before TensorFlow loads)

import tensorflow as tf  # noqa: E402
import tf_keras  # noqa: E402
from google.protobuf import json_format  # noqa: E402
from tfx import v1 as tfx  # noqa: E402
from tfx.components.trainer import executor as trainer_executor  # noqa: E402
from tfx.types import artifact_utils, standard_artifacts  # noqa: E402

from components.fusion_trainer import executor as fusion_executor  # noqa: E402
from pipeline import configs  # noqa: E402
from tools import metadata  # noqa: E402
from trainer import names  # noqa: E402


def trainer_inputs(pipeline_root: str, stage: str):
  """The stage's inputs: the newest Transform outputs of the run at pipeline_root and, after
  stage 1, its newest upstream Trainer models."""
  store = metadata.open_store(pipeline_root)
  outputs = metadata.latest_outputs(store, names.TRANSFORM)
  examples = standard_artifacts.Examples()
  examples.uri = outputs['transformed_examples'][0].uri
  examples.split_names = artifact_utils.encode_split_names(['train', 'val'])
  graph = standard_artifacts.TransformGraph()
  graph.uri = outputs['transform_graph'][0].uri
  inputs = {'examples': [examples], 'transform_graph': [graph]}

  def model_of(upstream):
    artifact = standard_artifacts.Model()
    artifact.uri = metadata.latest_outputs(store, names.TRAINERS[upstream])['model'][0].uri
    return [artifact]

  if stage == names.INSTANCE:
    inputs[names.BASE_MODEL_KEY] = model_of(names.FULL)
  elif stage == names.FUSION:
    inputs[names.BASE_MODEL_KEY] = model_of(names.INSTANCE)
    inputs[names.FULL_MODEL_KEY] = model_of(names.FULL)
  return inputs


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__)
  parser.add_argument('pipeline_root')
  parser.add_argument('out_dir')
  parser.add_argument('--stage', default=names.FULL, choices=names.STAGES)
  parser.add_argument('--preset', default='tiny')
  parser.add_argument('--distribution', default='multi_worker')
  parser.add_argument('--logical-cpus', type=int, default=1,
                      help='split the CPU into this many logical devices (replicas of mirrored)')
  parser.add_argument('--worker-timeout', type=int, default=20)
  parser.add_argument('--steps', type=int, default=4)
  parser.add_argument('--epochs', type=int, default=1)
  parser.add_argument('--batch-size', type=int, default=2, help='per replica')
  parser.add_argument('--seed', type=int, default=0, help='of the initial weights')
  parser.add_argument('--init-model', default='', help='start from this model (init_model)')
  parser.add_argument('--precision', default='float32')
  args = parser.parse_args()
  if args.logical_cpus > 1:
    cpu = tf.config.list_physical_devices('CPU')[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration()] * args.logical_cpus)
  stage = args.stage
  config = configs.get_config(args.preset).replace(
      distribution=args.distribution, worker_timeout=args.worker_timeout,
      init_model=args.init_model, precision=args.precision,
      **{f'{stage}.steps_per_epoch': args.steps, f'{stage}.epochs': args.epochs,
         f'{stage}.batch_size': args.batch_size})
  # The same initial weights as a run of another distribution with the same seed (a
  # multi-worker stage starts every worker from worker 0's).
  tf_keras.utils.set_random_seed(args.seed)
  model, model_run = standard_artifacts.Model(), standard_artifacts.ModelRun()
  model.uri = os.path.join(args.out_dir, 'model')
  model_run.uri = os.path.join(args.out_dir, 'model_run')
  exec_properties = {
      'run_fn': configs.RUN_FNS[stage],
      'train_args': json_format.MessageToJson(tfx.proto.TrainArgs(splits=['train'])),
      'eval_args': json_format.MessageToJson(tfx.proto.EvalArgs(splits=['val'])),
      'custom_config': json.dumps(config.trainer_options(stage).to_dict()),
  }
  executor = (fusion_executor.Executor if stage == names.FUSION
              else trainer_executor.GenericExecutor)()
  executor.Do(trainer_inputs(args.pipeline_root, stage),
              {'model': [model], 'model_run': [model_run]}, exec_properties)
  print('TRAINER DONE', flush=True)


if __name__ == '__main__':
  main()
