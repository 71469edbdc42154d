"""preprocessing_fn and the transformed-feature codec on real photos: shapes, geometry, mask, spaces."""
from __future__ import annotations

import io

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from components.voc_example_gen import voc
from tests.conftest import SAMPLE
from trainer import color, features, preprocessing
from trainer.config import ConfigError, PipelineConfig, TransformOptions

S = 64


def _raw(image_id: str):
  """The VocExampleGen example of a sample image, as the tensors Transform would feed."""
  example = voc.ingest_image(SAMPLE, image_id, 'train').example
  f = example.features.feature
  boxes = np.stack([f[k].float_list.value for k in features.RAW_BOX_KEYS], axis=-1).reshape(-1, 4)
  return (f[features.RAW_IMAGE].bytes_list.value[0], boxes.astype(np.float32),
          np.array(f[features.RAW_DIFFICULT].int64_list.value, np.int64), example)


def _decode(encoded, options):
  return features.decode_example(encoded, options)


def _options(**fields) -> TransformOptions:
  return PipelineConfig(**fields).transform_options()


def _lab_of(rgb_uint8: np.ndarray) -> np.ndarray:
  return color.rgb_to_lab(rgb_uint8.astype(np.float32) / 255.0).numpy()


@pytest.mark.parametrize('color_space,channels', [('lab', 2), ('rgb', 3)])
@pytest.mark.parametrize('size', [32, 64])
def test_shapes_for_both_colour_spaces(color_space, channels, size):
  options = _options(image_size=size, max_boxes=3, color_space=color_space)
  jpeg, boxes, difficult, _ = _raw('motorcycle_left')
  decoded = _decode(preprocessing.encode_example(jpeg, boxes, difficult, options), options)
  assert decoded[features.GRAY].shape == (size, size, 1)
  assert decoded[features.TARGET].shape == (size, size, channels)
  assert decoded[features.INSTANCE_GRAY].shape == (3, size, size, 1)
  assert decoded[features.INSTANCE_TARGET].shape == (3, size, size, channels)
  assert decoded[features.BOXES].shape == (3, 4)
  np.testing.assert_array_equal(decoded[features.BOX_MASK], [1, 1, 0])
  # Normalised ranges: L in [-0.5, 0.5]; ab/110 or RGB in [-1, 1].
  assert -0.5 <= float(tf.reduce_min(decoded[features.GRAY])) <= float(
      tf.reduce_max(decoded[features.GRAY])) <= 0.5
  assert float(tf.reduce_max(tf.abs(decoded[features.TARGET]))) <= 1.0


@pytest.mark.parametrize('color_space', ['lab', 'rgb'])
def test_full_frame_is_the_resized_photo(color_space):
  options = _options(image_size=S, max_boxes=2, color_space=color_space)
  jpeg, boxes, difficult, _ = _raw('chelsea')
  decoded = _decode(preprocessing.encode_example(jpeg, boxes, difficult, options), options)
  resized = np.asarray(Image.open(io.BytesIO(jpeg)).convert('RGB').resize((S, S), Image.BILINEAR))
  lab = _lab_of(resized)
  gray = color.denormalize_l(decoded[features.GRAY]).numpy()[..., 0]
  assert np.abs(gray - lab[..., 0]).mean() < 1.0  # L units of 100
  if color_space == 'lab':
    ab = color.denormalize_ab(decoded[features.TARGET]).numpy()
    assert np.abs(ab - lab[..., 1:]).mean() < 1.5
  else:
    rgb = color.denormalize_rgb(decoded[features.TARGET]).numpy() * 255
    assert np.abs(rgb - resized).mean() < 2.5


def test_instance_crop_equals_crop_of_the_photo():
  """Each crop is the box region of the original photo resized to S x S (compared with PIL)."""
  options = _options(image_size=S, max_boxes=4, color_space='rgb')
  jpeg, boxes, difficult, _ = _raw('motorcycle_left')
  decoded = _decode(preprocessing.encode_example(jpeg, boxes, difficult, options), options)
  photo = Image.open(io.BytesIO(jpeg)).convert('RGB')
  w, h = photo.size
  out_boxes = decoded[features.BOXES].numpy()
  # Largest first: the motorbike (595x355 px) before the bicycle (44x105 px).
  np.testing.assert_allclose(out_boxes[:2], boxes[[0, 1]], atol=1e-6)
  for k in range(2):
    ymin, xmin, ymax, xmax = out_boxes[k]
    window = (int(np.floor(xmin * w)), int(np.floor(ymin * h)), int(np.ceil(xmax * w)),
              int(np.ceil(ymax * h)))
    expected = np.asarray(photo.crop(window).resize((S, S), Image.BILINEAR), np.float32)
    crop = color.denormalize_rgb(decoded[features.INSTANCE_TARGET][k]).numpy() * 255
    assert np.abs(crop - expected).mean() < 3.0, k
    # And not some other region: the whole photo resized is far from the bicycle crop.
    if k == 1:
      whole = np.asarray(photo.resize((S, S), Image.BILINEAR), np.float32)
      assert np.abs(crop - whole).mean() > 20
  # Padding crops are all zero pixels and mask 0.
  np.testing.assert_array_equal(decoded[features.BOX_MASK], [1, 1, 0, 0])
  np.testing.assert_array_equal(out_boxes[2:], 0)


def test_box_cap_keeps_the_largest_and_difficult_is_configurable():
  jpeg, _, _, _ = _raw('astronaut')
  boxes = np.array([[0.1, 0.1, 0.2, 0.2], [0.0, 0.0, 0.9, 0.9], [0.3, 0.3, 0.6, 0.6],
                    [0.5, 0.5, 0.55, 0.55]], np.float32)
  difficult = np.array([0, 0, 1, 0])
  easy = _options(image_size=32, max_boxes=2)
  out = preprocessing.encode_example(jpeg, boxes, difficult, easy)
  np.testing.assert_allclose(out[features.BOXES], boxes[[1, 0]])
  with_difficult = _options(image_size=32, max_boxes=2,
                                                  include_difficult=True)
  out = preprocessing.encode_example(jpeg, boxes, difficult, with_difficult)
  np.testing.assert_allclose(out[features.BOXES], boxes[[1, 2]])


def test_no_boxes_gives_an_empty_mask():
  options = _options(image_size=32, max_boxes=3)
  jpeg, boxes, difficult, _ = _raw('coffee')
  assert boxes.shape == (0, 4)
  decoded = _decode(preprocessing.encode_example(jpeg, boxes, difficult, options), options)
  np.testing.assert_array_equal(decoded[features.BOX_MASK], [0, 0, 0])
  assert float(tf.reduce_max(tf.abs(decoded[features.INSTANCE_TARGET]))) == pytest.approx(
      128 / 110, abs=0.01)  # zero Lab8 pixels decode to a = b = -128: padding is masked out


def test_preprocessing_fn_on_a_parsed_batch():
  ids = ['astronaut', 'coffee', 'motorcycle_left']
  serialized = [_raw(i)[3].SerializeToString() for i in ids]
  spec = {features.RAW_IMAGE: tf.io.FixedLenFeature([1], tf.string),
          features.RAW_SOURCE_ID: tf.io.FixedLenFeature([1], tf.string),
          features.RAW_DIFFICULT: tf.io.VarLenFeature(tf.int64),
          **{k: tf.io.VarLenFeature(tf.float32) for k in features.RAW_BOX_KEYS}}
  options = _options(image_size=32, max_boxes=2)
  outputs = preprocessing.preprocessing_fn(tf.io.parse_example(serialized, spec),
                                           options.to_dict())
  assert outputs[features.INSTANCES].shape == (3, 2)
  np.testing.assert_array_equal(outputs[features.BOX_MASK], [[1, 0], [0, 0], [1, 1]])
  assert [s.decode() for s in outputs[features.SOURCE_ID].numpy()] == ids
  decoded = features.decode_batch(outputs, options)
  assert decoded[features.INSTANCE_TARGET].shape == (3, 2, 32, 32, 2)


def test_options_validate():
  with pytest.raises(ValueError, match='color_space'):
    _options(color_space='hsv')
  with pytest.raises(ValueError, match='max_boxes'):
    _options(max_boxes=0)
  values = _options(image_size=48).to_dict()
  assert TransformOptions.from_dict(values).image_size == 48
  # A renamed or misspelt key is an error, never a silent fall-back to a default.
  with pytest.raises(ConfigError, match=r"unknown keys \['unrelated'\]"):
    TransformOptions.from_dict({**values, 'unrelated': 1})
  with pytest.raises(ConfigError, match=r"missing keys \['image_size'\]"):
    TransformOptions.from_dict({k: v for k, v in values.items() if k != 'image_size'})
