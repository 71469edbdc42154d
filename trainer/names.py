"""Names shared by the pipeline definition, the components, the model code and the after-run tools.

No TensorFlow import: `pipeline_runner.py --help` and config validation load this without it.
"""
from __future__ import annotations

import os
from typing import Dict, Tuple

PIPELINE_NAME = 'instcolor'

# The three Trainer stages, in pipeline order.
FULL, INSTANCE, FUSION = 'full', 'instance', 'fusion'
STAGES: Tuple[str, ...] = (FULL, INSTANCE, FUSION)

# Component (node) ids, as ML Metadata records them.
EXAMPLE_GEN = 'VocExampleGen'
STATISTICS_GEN = 'StatisticsGen'
SCHEMA_GEN = 'ImportSchemaGen'
EXAMPLE_VALIDATOR = 'ExampleValidator'
TRANSFORM = 'Transform'
TRAINERS: Dict[str, str] = {stage: f'{stage}_trainer' for stage in STAGES}
RESOLVER = 'latest_blessed_model_resolver'
EVALUATOR = 'Evaluator'
PUSHER = 'Pusher'
ABLATION = 'AblationGallery'
# Every node that runs an executor (the Resolver only looks artifacts up), in pipeline order.
EXECUTED_NODES: Tuple[str, ...] = (EXAMPLE_GEN, STATISTICS_GEN, SCHEMA_GEN, EXAMPLE_VALIDATOR,
                                   TRANSFORM, *TRAINERS.values(), EVALUATOR, PUSHER, ABLATION)

# Input channel keys. BASE_MODEL is the stock Trainer's; FULL_MODEL is the FusionTrainer's second
# Model input, and also the custom_config key its executor hands the full net's path on under.
BASE_MODEL_KEY = 'base_model'
FULL_MODEL_KEY = 'full_model'

# The 13 points where stage 3 mixes instance features into the full-image net (the paper's).
FUSION_POINTS: Tuple[str, ...] = (
    'conv1_2', 'conv2_2', 'conv3_3', 'conv4_3', 'conv5_3', 'conv6_3', 'conv7_3', 'conv8_up',
    'conv8_3', 'conv9_up', 'conv9_3', 'conv10_up', 'conv10_2')
# The 10 of them below the input's resolution (S/2 and coarser): the `cpu` preset's. At the three
# S x S points each box's pastes and weight generators cost most of what fusing it costs, and on
# imagenet1k they did not add colour (README, Benchmarks).
COARSE_FUSION_POINTS: Tuple[str, ...] = tuple(
    p for p in FUSION_POINTS if p not in ('conv1_2', 'conv10_up', 'conv10_2'))

# Colour spaces of the target: Lab (L in, ab out) or RGB (gray in, RGB out).
LAB, RGB = 'lab', 'rgb'
COLOR_SPACES: Tuple[str, ...] = (LAB, RGB)

# Split modes of the VOC ExampleGen.
SPLIT_MODES: Tuple[str, ...] = ('auto', 'lists', 'hash')

# Each Trainer writes its nets' weights to <model artifact>/WEIGHTS_DIR/<net>.h5 (what the next
# stage loads; <net>_initial.h5 is what a stage started from) and its Keras history beside them.
WEIGHTS_DIR = 'weights'
HISTORY_FILE = 'history.json'
# ... and how it trained: the tf.distribute strategy, replicas, global and per-replica batch.
TRAINING_FILE = 'training.json'
# ... and, when stage 1's encoder started from pretrained weights, what they were (source, sha256).
BACKBONE_FILE = 'backbone_init.json'
# Beside the weights too: the model a fine-tuning run's stage started from (init_model).
INIT_MODEL_FILE = 'init_model.json'
# The fusion Trainer's TFLite file in its serving model (`tflite_export`; Pusher pushes it with
# the model) and its record: quantization, size, sha256, the check on val items.
TFLITE_FILE = os.path.join('assets.extra', 'instcolor.tflite')
TFLITE_RECORD = os.path.join('assets.extra', 'instcolor_tflite.json')


def weights_file(model_uri: str, net: str) -> str:
  """<model artifact uri>/weights/<net>.h5."""
  return os.path.join(model_uri, WEIGHTS_DIR, f'{net}.h5')

# The serving signature's saturation input and `colorize --saturation` take [0, MAX_SATURATION]:
# ab x 4 is past every photo's gamut, beyond it only errors are asked for.
MAX_SATURATION = 4.0
