"""Colour hints: SIGGRAPH17's simulation, the hint map serving renders, the hints file, the serving
signature's checks, and what a net trained with hints does with them on real photos."""
import glob
import io
import json
import os

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from tests.conftest import RACCOON_VOC
from tools import colorize, hints_file
from trainer import color, data, features, hints, model, names, preprocessing, serving
from trainer.config import ConfigError, PipelineConfig

SIZE = 32


def _photo_pairs(names_, size=SIZE):
  """(gray [N,S,S,1], ab target [N,S,S,2]) of raccoon photos, resized as Transform does."""
  pairs = []
  for name in names_:
    jpeg = tf.io.read_file(os.path.join(RACCOON_VOC, 'JPEGImages', f'{name}.jpg'))
    rgb = tf.image.convert_image_dtype(tf.io.decode_jpeg(jpeg, channels=3), tf.float32)
    pairs.append(features.split_rgb(preprocessing.resize(rgb, size), names.LAB))
  return tf.stack([p[0] for p in pairs]), tf.stack([p[1] for p in pairs])


def _split(split):
  with open(os.path.join(RACCOON_VOC, 'ImageSets', 'Main', f'{split}.txt')) as f:
    return [line.strip() for line in f if line.strip()]


# --- simulation -------------------------------------------------------------------------------

def test_simulated_hint_counts_follow_siggraph17():
  counts = np.array([int(hints.draw_squares(SIZE, tf.constant([5, i]))[0]) for i in range(600)])
  # About half the items get none; the others a geometric count with mean 1/p = 8.
  assert 0.42 < (counts == 0).mean() < 0.58
  assert 6.5 < counts[counts > 0].mean() < 9.5
  _, sizes, tops, lefts = hints.draw_squares(SIZE, tf.constant([5, 1]))
  assert sizes.numpy().min() >= 1 and sizes.numpy().max() <= 9
  assert (tops.numpy() + sizes.numpy() <= SIZE).all() and (lefts.numpy() + sizes.numpy() <= SIZE).all()


def test_simulated_hints_hold_the_true_colour_under_them():
  _, target = _photo_pairs(_split('train')[:1])
  target = target[0]
  flat = tf.fill(target.shape, 0.0) + tf.constant([0.3, -0.2])  # one colour: every hint is it
  hinted = 0
  for i in range(20):
    hint_map = hints.simulate(flat, tf.constant([9, i])).numpy()
    mask = hint_map[..., 2] > 0
    hinted += mask.any()
    np.testing.assert_allclose(hint_map[mask][:, :2], np.tile([[0.3, -0.2]], [mask.sum(), 1]),
                               atol=1e-6)
    assert (hint_map[~mask] == 0).all()
  assert 5 <= hinted <= 15  # about half the items have hints
  # On a real photo each hint is a mean of the truth: inside its range, off the plain zero.
  for i in range(20):
    hint_map = hints.simulate(target, tf.constant([9, i])).numpy()
    mask = hint_map[..., 2] > 0
    if mask.any():
      values = hint_map[mask][:, :2]
      assert (values >= target.numpy().min(axis=(0, 1)) - 1e-6).all()
      assert (values <= target.numpy().max(axis=(0, 1)) + 1e-6).all()


def test_render_places_each_point_as_a_square_the_later_winning():
  points = tf.constant([[0.5, 0.5], [0.5, 0.55], [1.0, 1.0], [0.1, 0.1]])
  ab = tf.constant([[0.3, -0.2], [-0.1, 0.4], [0.2, 0.2], [0.9, 0.9]])
  hint_map = hints.render(points, ab, tf.constant([1.0, 1.0, 1.0, 0.0]), SIZE).numpy()
  centre = SIZE // 2
  np.testing.assert_allclose(hint_map[centre, centre - 2], [0.3, -0.2, 1.0], atol=1e-6)
  np.testing.assert_allclose(hint_map[centre, centre + 1], [-0.1, 0.4, 1.0], atol=1e-6)  # later
  # A point on the edge keeps its whole square inside the frame; a padding row (present 0) none.
  assert hint_map[-hints.POINT_SIZE:, -hints.POINT_SIZE:, 2].all()
  assert hint_map[:6, :6, 2].sum() == 0
  area = hints.POINT_SIZE ** 2
  assert area * 2 < hint_map[..., 2].sum() <= area * 3


def test_spread_fills_around_hints_with_their_colour_and_nothing_without():
  cells = 16
  hint_map = np.zeros([2, cells, cells, 3], np.float32)
  hint_map[0, 3, 3] = [0.4, -0.2, 1.0]
  hint_map[0, 12, 12] = [-0.3, 0.1, 1.0]
  spread = hints.spread(tf.constant(hint_map), sigma=2.0).numpy()
  ab, confidence = spread[0, ..., :2], spread[0, ..., 2]
  # At a hint: its own colour at full confidence; near it, its colour at a confidence that decays.
  np.testing.assert_allclose(ab[3, 3], [0.4, -0.2], atol=1e-3)
  assert confidence[3, 3] == pytest.approx(1.0)
  np.testing.assert_allclose(ab[4, 4] / confidence[4, 4], [0.4, -0.2], atol=1e-3)
  assert 0.3 < confidence[5, 5] < 0.5  # exp(-8/8)
  assert confidence[0, 15] < 1e-3  # far from both: hardly any guess
  # An image without hints gets exactly zeros (the hint-free net is unchanged).
  assert not spread[1].any()


def test_crop_hints_are_the_hints_inside_the_box():
  hint_map = hints.render(tf.constant([[0.25, 0.25], [0.8, 0.8]]),
                          tf.constant([[0.3, -0.2], [0.5, 0.5]]), tf.ones([2]), SIZE)
  crop = hints.in_boxes(hint_map[None], tf.constant([[0.0, 0.0, 0.5, 0.5]]), tf.constant([0]),
                        SIZE).numpy()[0]
  # The first point (at the box's centre) is in the crop, twice as large; the second is outside.
  np.testing.assert_allclose(crop[SIZE // 2, SIZE // 2], [0.3, -0.2, 1.0], atol=1e-6)
  assert crop[..., 2].sum() == pytest.approx(4 * hints.POINT_SIZE ** 2)
  assert not np.isclose(crop[..., :2], 0.5).any()


def test_every_stage_trains_with_hints(tmp_path):
  """make_dataset adds a hints input to each stage, simulated in training and zero in
  evaluation (the automatic colour the blessing measures)."""
  net = PipelineConfig(image_size=SIZE, max_boxes=2, hints=True).net_config()
  gray, target = _photo_pairs(_split('train')[:8])
  trained = [data.with_hints(g, t, simulated=True) for g, t in zip(gray, target)]
  assert all(set(inputs) == {features.GRAY, features.HINTS} for inputs, _ in trained)
  assert any(inputs[features.HINTS][..., 2].numpy().any() for inputs, _ in trained)
  evaluated, _ = data.with_hints({features.GRAY: gray[0]}, target[0], simulated=False)
  assert not evaluated[features.HINTS].numpy().any()
  assert net.hints


def test_hints_need_lab():
  with pytest.raises(ConfigError, match='hints .* color_space'):
    PipelineConfig(hints=True, color_space=names.RGB)


def test_zero_hints_and_no_hint_branch_are_the_same_net():
  """The hint branch starts at zero and has no bias: a hint net given no hints computes exactly
  what the same weights compute without the branch."""
  config = PipelineConfig(image_size=SIZE, width=0.125, hints=True).net_config()
  plain = model.ColorNet(PipelineConfig(image_size=SIZE, width=0.125).net_config(), 'full')
  hinted = model.ColorNet(config, 'full')
  for point, block in plain.blocks.items():
    hinted.blocks[point].set_weights(block.get_weights())
  hinted.head.set_weights(plain.head.get_weights())
  for conv in hinted.hint_convs.values():  # trained or not, zero hints add nothing
    conv.set_weights([np.random.default_rng(0).normal(size=w.shape) for w in conv.get_weights()])
  gray, _ = _photo_pairs(_split('val')[:2])
  np.testing.assert_array_equal(plain.model(gray).numpy(),
                                hinted.model(hinted.model_inputs(gray)).numpy())


# --- the hints file ---------------------------------------------------------------------------

def test_hints_file_reads_points_boxes_and_colour_names(tmp_path):
  path = tmp_path / 'hints.json'
  path.write_text(json.dumps({'a.jpg': {'points': [[0.2, 0.3, '#aa3311'], [1, 0, 'red']],
                                        'boxes': [[0.1, 0.1, 0.6, 0.5, '#0f0']]},
                              'b.jpg': {}}))
  parsed = hints_file.load(str(path))
  np.testing.assert_allclose(parsed['a.jpg'].points,
                             [[0.2, 0.3, 0xaa / 255, 0x33 / 255, 0x11 / 255], [1, 0, 1, 0, 0]],
                             atol=1e-6)
  np.testing.assert_allclose(parsed['a.jpg'].box_colors, [[0, 1, 0]])
  assert parsed['b.jpg'].count == 0


@pytest.mark.parametrize('entry, message', [
    ({'points': [[1.2, 0.3, 'red']]}, r'photo.jpg: points\[0\]: y must be in \[0, 1\]'),
    ({'points': [[0.2, -0.1, 'red']]}, r'photo.jpg: points\[0\]: x must be in \[0, 1\]'),
    ({'points': [[0.2, 0.3, '#zz0000']]}, r"photo.jpg: points\[0\]: '#zz0000' is not a colour"),
    ({'points': [[0.2, 0.3, 12]]}, r'photo.jpg: points\[0\]: the colour must be a string'),
    ({'points': [[0.2, 0.3]]}, r'photo.jpg: points\[0\] must be \[y, x, colour\]'),
    ({'boxes': [[0.5, 0.1, 0.4, 0.5, 'red']]}, r'photo.jpg: boxes\[0\]: the box must have ymin'),
    ({'boxes': [[0.1, 0.1, 0.4, 1.5, 'red']]}, r'photo.jpg: boxes\[0\]: xmax must be in'),
    ({'boxes': [[0.1, 0.1, 0.4, 0.5, 'blurple']]}, r"photo.jpg: boxes\[0\]: 'blurple' is not"),
    ({'colours': []}, r"photo.jpg: unknown fields \['colours'\]"),
])
def test_a_bad_hint_is_refused_naming_the_photo_and_field(entry, message):
  with pytest.raises(hints_file.HintsError, match=message):
    hints_file.parse({'photo.jpg': entry})


# --- a net trained with hints, on real photos -------------------------------------------------

FAR_AB = (0.5, -0.5)  # normalised: a = +55, b = -55, a violet no raccoon photo is


@pytest.fixture(scope='module')
def hint_model(tmp_path_factory) -> str:
  """A small full-image net trained with simulated hints on the raccoon train photos (a few
  hundred steps at 32^2: enough to learn to follow a hint), exported with the Trainer's serving
  code."""
  config = PipelineConfig(image_size=SIZE, width=0.125, max_boxes=2, hints=True,
                          precision='float32').net_config()
  gray, target = _photo_pairs(_split('train'))
  tf.keras.utils.set_random_seed(1)
  items = (tf.data.Dataset.from_tensor_slices((gray, target)).shuffle(200, seed=1).repeat()
           .map(lambda g, t: data.with_hints(g, t, simulated=True)).batch(16))
  net = model.ColorNet(config, names.FULL)
  model.compile_for_training(net.model, config, 2e-3)
  net.model.fit(items, steps_per_epoch=400, epochs=1, verbose=0)
  path = str(tmp_path_factory.mktemp('hint_model') / '1')
  colorizer = serving.Colorizer(net.model, names.FULL, config)
  serving.save(colorizer, path, colorizer.image_signatures())
  return path


def _val_jpegs(count):
  jpegs = []
  for name in _split('val')[:count]:
    with open(os.path.join(RACCOON_VOC, 'JPEGImages', f'{name}.jpg'), 'rb') as f:
      jpegs.append(f.read())
  return jpegs


def _ab_of(signatures, name, jpegs, **inputs):
  return signatures[name](images=tf.constant(jpegs), **inputs)['ab'].numpy()


def _far_colour_rgb():
  lab = tf.constant([[60.0, FAR_AB[0] * color.AB_SCALE, FAR_AB[1] * color.AB_SCALE]])
  return color.lab_to_rgb(lab).numpy()[0]


def test_a_hint_moves_the_colour_around_it_and_not_the_far_side(hint_model):
  signatures = tf.saved_model.load(hint_model).signatures
  jpegs = _val_jpegs(6)
  count = len(jpegs)
  boxes = tf.zeros([count, 0, 4])
  plain = _ab_of(signatures, 'serving_default', jpegs, boxes=boxes)
  # No hints through the hint signature: exactly serving_default's output.
  unhinted = _ab_of(signatures, 'colorize_with_hints', jpegs, boxes=boxes,
                    hints=tf.zeros([count, 0, 6]), box_colors=tf.zeros([count, 0, 4]),
                    saturation=tf.ones([count]))
  np.testing.assert_array_equal(unhinted, plain)
  rgb = _far_colour_rgb()
  rows = np.tile([[[0.25, 0.25, *rgb, 1.0]]], [count, 1, 1]).astype(np.float32)
  hinted = _ab_of(signatures, 'colorize_with_hints', jpegs, boxes=boxes, hints=rows,
                  box_colors=tf.zeros([count, 0, 4]), saturation=tf.ones([count]))
  target = np.asarray(hints.srgb_to_ab(tf.constant(rgb)) * color.AB_SCALE)
  c, r = SIZE // 4, 2
  near_before = plain[:, c - r:c + r + 1, c - r:c + r + 1].mean(axis=(1, 2))
  near_after = hinted[:, c - r:c + r + 1, c - r:c + r + 1].mean(axis=(1, 2))
  before = np.linalg.norm(near_before - target, axis=-1)
  after = np.linalg.norm(near_after - target, axis=-1)
  # Around the point the colour goes most of the way to the hint, on every photo...
  assert (after < 0.5 * before).all(), (before, after)
  # ... and the far corner of the photo moves much less.
  far_change = np.abs(hinted[:, -6:, -6:] - plain[:, -6:, -6:]).mean(axis=(1, 2, 3))
  near_change = np.linalg.norm(near_after - near_before, axis=-1)
  assert (far_change < 0.25 * near_change).all(), (far_change, near_change)


def test_a_box_colour_colours_that_box(hint_model):
  signatures = tf.saved_model.load(hint_model).signatures
  jpegs = _val_jpegs(4)
  count = len(jpegs)
  box = [0.1, 0.5, 0.6, 0.95]
  boxes = tf.constant([[box]] * count, tf.float32)
  plain = _ab_of(signatures, 'serving_default', jpegs, boxes=boxes)
  colors = tf.constant([[[*_far_colour_rgb(), 1.0]]] * count, tf.float32)
  coloured = _ab_of(signatures, 'colorize_with_hints', jpegs, boxes=boxes,
                    hints=tf.zeros([count, 0, 6]), box_colors=colors, saturation=tf.ones([count]))
  target = np.asarray(hints.srgb_to_ab(tf.constant(_far_colour_rgb())) * color.AB_SCALE)
  rows = slice(int(box[0] * SIZE), int(box[2] * SIZE))
  cols = slice(int(box[1] * SIZE), int(box[3] * SIZE))
  inside_before = np.linalg.norm(plain[:, rows, cols].mean(axis=(1, 2)) - target, axis=-1)
  inside_after = np.linalg.norm(coloured[:, rows, cols].mean(axis=(1, 2)) - target, axis=-1)
  assert (inside_after < 0.7 * inside_before).all(), (inside_before, inside_after)
  outside = np.abs(coloured[:, -8:, :8] - plain[:, -8:, :8]).mean(axis=(1, 2, 3))
  assert (outside < 0.25 * (inside_before - inside_after)).all()


@pytest.mark.parametrize('rows, colors, message', [
    ([[1.5, 0.5, 0.2, 0.2, 0.2, 1.0]], [], 'y and x'),
    ([[0.5, 0.5, 0.2, 1.2, 0.2, 1.0]], [], 'r, g, b'),
    ([[0.5, 0.5, 0.2, 0.2, 0.2, 0.5]], [], 'present'),
    ([], [[0.1, -0.3, 0.2, 1.0]], 'box_colors: r, g, b'),
])
def test_the_signature_refuses_bad_hints(hint_model, rows, colors, message):
  signatures = tf.saved_model.load(hint_model).signatures
  jpegs = _val_jpegs(1)
  boxes = [[[0.1, 0.1, 0.5, 0.5]]] if colors else np.zeros([1, 0, 4])
  with pytest.raises(tf.errors.InvalidArgumentError, match=message):
    signatures['colorize_with_hints'](
        images=tf.constant(jpegs), boxes=tf.constant(boxes, tf.float32),
        hints=tf.constant(np.reshape(rows, [1, -1, 6]), tf.float32),
        box_colors=tf.constant(np.reshape(colors, [1, -1, 4]), tf.float32),
        saturation=tf.ones([1]))


def test_colorize_hints_file_on_photos(hint_model, tmp_path):
  """`colorize --hints`: the hinted photo comes out with the hint's colour around the point, the
  photo without an entry as without hints."""
  jpegs = sorted(glob.glob(os.path.join(RACCOON_VOC, 'JPEGImages', '*.jpg')))[:2]
  rgb = _far_colour_rgb()
  colour = '#%02x%02x%02x' % tuple(int(round(v * 255)) for v in rgb)
  table = {os.path.basename(jpegs[0]): {'points': [[0.5, 0.5, colour]]}}
  plain = colorize.colorize_files(hint_model, jpegs, str(tmp_path / 'plain'))
  hinted = colorize.colorize_files(hint_model, jpegs, str(tmp_path / 'hinted'),
                                   hints=hints_file.parse(table))
  assert not hinted.failed and len(hinted.written) == 2

  def ab_at_centre(path):
    image = np.asarray(Image.open(path).convert('RGB'), np.float32) / 255.0
    h, w = image.shape[:2]
    patch = image[h // 2 - h // 40:h // 2 + h // 40 + 1, w // 2 - w // 40:w // 2 + w // 40 + 1]
    return color.rgb_to_lab(tf.constant(patch)).numpy()[..., 1:].mean(axis=(0, 1))

  target = np.asarray(hints.srgb_to_ab(tf.constant(rgb)) * color.AB_SCALE)
  moved = [np.linalg.norm(ab_at_centre(p) - target) for p in (plain.written[0], hinted.written[0])]
  assert moved[1] < 0.6 * moved[0]
  np.testing.assert_array_equal(np.asarray(Image.open(plain.written[1])),
                                np.asarray(Image.open(hinted.written[1])))


def test_a_model_without_hints_refuses_hints(exported_model, tmp_path):
  jpeg = sorted(glob.glob(os.path.join(RACCOON_VOC, 'JPEGImages', '*.jpg')))[:1]
  with pytest.raises(LookupError, match='trained without them'):
    colorize.colorize_files(exported_model, jpeg, str(tmp_path),
                            hints={'x.jpg': hints_file.NO_HINTS})
