"""VocExampleGen: FileBasedExampleGen with the VOC executor and an image-aware fingerprint, for
VOCdevkit folders and plain photo folders."""
from __future__ import annotations

import os
from typing import Optional, Sequence, Tuple

import tensorflow as tf
from tfx import v1 as tfx
from tfx.components import FileBasedExampleGen
from tfx.dsl.components.base import executor_spec

from components import detectors
from components.voc_example_gen import driver, executor, voc
from trainer import names
from trainer.config import IngestOptions

LIST_DIR = 'ImageSets/Main'


def split_configs(data_root: str, split_mode: str = 'auto',
                  hash_buckets: Sequence[Tuple[str, int]] = (('train', 9), ('val', 1))):
  """Input/output configs: ImageSets/Main/{train,val}.txt when present, else a hash split on the id.

  `split_mode` is 'lists', 'hash' or 'auto' (lists when train.txt and val.txt exist; for remote
  roots such as gs:// 'auto' means 'lists', since compiling must not need to read the bucket). A
  local folder without JPEGImages/ is a plain photo folder: every image in its tree, hash split.
  """
  remote = '://' in data_root
  if not remote and not voc.is_voc_folder(data_root):
    if split_mode == 'lists':
      raise ValueError(f'split_mode=lists needs ImageSets/Main lists; {data_root} is a plain photo '
                       'folder (no JPEGImages/): use split_mode=hash or auto')
    return _hash_split(voc.PLAIN_PATTERN, hash_buckets)
  if split_mode == 'auto' and remote:
    split_mode = 'lists'  # not checked: compiling for a remote root must not need to reach it
  if split_mode == 'auto':
    have_lists = all(tf.io.gfile.exists(os.path.join(data_root, LIST_DIR, f'{s}.txt'))
                     for s in ('train', 'val'))
    split_mode = 'lists' if have_lists else 'hash'
  if split_mode == 'lists':
    input_config = tfx.proto.Input(splits=[
        tfx.proto.Input.Split(name=s, pattern=f'{LIST_DIR}/{s}.txt') for s in ('train', 'val')])
    return input_config, None
  if split_mode != 'hash':
    raise ValueError(f'split_mode must be one of {names.SPLIT_MODES}, not {split_mode!r}')
  return _hash_split('JPEGImages/*', hash_buckets)


def _hash_split(pattern: str, hash_buckets: Sequence[Tuple[str, int]]):
  input_config = tfx.proto.Input(splits=[tfx.proto.Input.Split(name='all', pattern=pattern)])
  output_config = tfx.proto.Output(split_config=tfx.proto.SplitConfig(
      splits=[tfx.proto.SplitConfig.Split(name=n, hash_buckets=b) for n, b in hash_buckets],
      partition_feature_name='image/source_id'))
  return input_config, output_config


class VocExampleGen(FileBasedExampleGen):
  """Reads a VOCdevkit year folder (JPEGImages/, Annotations/, ImageSets/Main/), or a plain photo
  folder (with `ingest_options.detector` to box its photos)."""

  DRIVER_CLASS = driver.VocDriver

  def __init__(self, data_root: str, split_mode: str = 'auto',
               ingest_options: Optional[IngestOptions] = None):
    input_config, output_config = split_configs(data_root, split_mode)
    options = ingest_options or voc.DEFAULT_OPTIONS
    # A local detector's hash goes into the cache key; a remote one is hashed when ExampleGen runs.
    local_detector = options.detector and '://' not in options.detector and os.path.exists(
        options.detector)
    super().__init__(
        input_base=data_root,
        input_config=input_config,
        output_config=output_config,
        custom_config=executor.pack_ingest_options(
            options, detectors.fingerprint(options.detector) if local_detector else ''),
        custom_executor_spec=executor_spec.BeamExecutorSpec(executor.Executor))
