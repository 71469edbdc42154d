"""VocExampleGen: FileBasedExampleGen with the VOC executor and an image-aware fingerprint, for
VOCdevkit folders and plain photo folders."""
from __future__ import annotations

import os
from typing import List, Optional, Sequence, Tuple, Union

from tfx import v1 as tfx
from tfx.components import FileBasedExampleGen
from tfx.dsl.components.base import executor_spec

from components import detectors
from components.voc_example_gen import driver, executor, voc
from trainer import names
from trainer.config import IngestOptions

LIST_DIR = voc.LIST_DIR


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
    split_mode = 'lists' if voc.has_lists(data_root) else 'hash'
  if split_mode == 'lists':
    input_config = tfx.proto.Input(splits=[
        tfx.proto.Input.Split(name=s, pattern=f'{LIST_DIR}/{s}.txt') for s in voc.SPLITS])
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


def sources_split_config():
  """Several sources: train and val as voc.plan_sources assigns them, source by source."""
  return tfx.proto.Input(splits=[tfx.proto.Input.Split(name=s, pattern=voc.SOURCES_PATTERN + s)
                                 for s in voc.SPLITS])


class VocExampleGen(FileBasedExampleGen):
  """Reads a VOCdevkit year folder (JPEGImages/, Annotations/, ImageSets/Main/), or a plain photo
  folder (with `ingest_options.detector` to box its photos), or several such folders."""

  DRIVER_CLASS = driver.VocDriver

  def __init__(self, data_root: Union[str, Sequence[str]], split_mode: str = 'auto',
               ingest_options: Optional[IngestOptions] = None):
    """`data_root`: one folder, or several (read together, ids namespaced by source)."""
    roots = [data_root] if isinstance(data_root, str) else list(data_root)
    if not roots:
      raise ValueError('VocExampleGen needs at least one data folder')
    sources: List[str] = []
    if len(roots) == 1:
      input_config, output_config = split_configs(roots[0], split_mode)
    else:
      sources = roots
      input_config, output_config = sources_split_config(), None
    options = ingest_options or voc.DEFAULT_OPTIONS
    # A local detector's hash goes into the cache key; a remote one is hashed when ExampleGen runs.
    local_detector = options.detector and '://' not in options.detector and os.path.exists(
        options.detector)
    super().__init__(
        input_base=roots[0],
        input_config=input_config,
        output_config=output_config,
        custom_config=executor.pack_ingest_options(
            options, detectors.fingerprint(options.detector) if local_detector else '',
            sources, split_mode),
        custom_executor_spec=executor_spec.BeamExecutorSpec(executor.Executor))
