"""Serving roofline: what a colorize request costs against what this machine's convolutions allow.

  .venv/bin/python bench/serve.py [--widths 0.25 1.0] [--repeats 5] [--precisions ...]
  .venv/bin/python bench/serve.py --trained FUSION_MODEL_DIR --preset cpu [--data-dir VOC]
  .venv/bin/python bench/serve.py --tflite [--widths 1.0] [--presets cpu paper] [--pushed SERVING_DIR]
  .venv/bin/python bench/serve.py --hints [--widths 0.25 1.0]
  (each with [--set KEY=VALUE ...]: a config field of every net it builds, e.g. fusion_points)

For each width and precision (default: float32 and what `auto` picks here, when that differs), the
fusion net is built untrained at 256^2, K=8 (weight values do not change latency) and exported
with the Trainer's serving code (trainer/serving.py). In the same run:

- conv throughput: GFLOP/s of the bare full-image backbone forward on one image (its FLOPs from the
  TF profiler on the net's graph, its time measured here);
- per request with 0, 2 and 8 boxes: the GFLOP that request needs (the TF profiler on the nets it
  runs: the full-image net alone without boxes, else the instance net on the real crops plus the
  fused full-image net), the serving signature's time (JPEG bytes in, PNG out: decoding, crops, Lab
  maths and upsampling included), the achieved GFLOP/s, and the ratio of the time to the roofline
  time (request GFLOP / backbone GFLOP/s). Goal: ratio <= 1.3.

--tflite: the TFLite export (tools/export_tflite.py) against the SavedModel it comes from, per
width (untrained nets at 256^2, K=8, as above), per preset (--presets: untrained nets of each
preset's own image size, width, K and objective, what a user of that preset exports) or for one
pushed model (--pushed DIR): file size,
and the latency of one request with 0, 2 and K boxes (JPEG in, PNG out for both: the export runs
with the serving signature's own pre- and post-processing; 2 boxes run its `fused_2` signature),
against the SavedModel in float32 and in what `auto` picks here (timed in alternating rounds),
then each signature of the file alone on random inputs (what a box slot costs). Goals: float16
file <= 0.5x the SavedModel, latency <= 1.2x.

--hints: what colour hints cost a request of a net trained with them (goal <= 1.05x): per width
and precision, untrained nets at 256^2, K=8 as above, the hint net's colorize_with_hints with 10
points (and, with boxes, a colour for every box) against the same request without hints
(serving_default), and against the net without the hint branch (hints=False), with 0, 2 and 8
boxes.

--trained: the fusion Trainer's Model artifact (its weights/fusion.h5) of a run with --preset's
net, exported once per precision, each scored by `evaluate` on the val photos of --data-dir (the
shared imagenet1k by default; full resolution, annotated boxes): images/s through the serving
signature and the fusion PSNR of each, side by side with the difference against float32.
"""
from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# Grappler warns once per CropAndResize it cannot cost: pages of it, nothing to act on.
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
import pipeline  # noqa: F401,E402  (sets the process up before TensorFlow loads)

import argparse
import dataclasses
import io
import tempfile
import time
from typing import Any, Dict, List, Sequence, Tuple

import numpy as np
import tensorflow as tf
from PIL import Image
from tensorflow.python.profiler import model_analyzer, option_builder

from bench.train import default_precisions
from bench.voc_volume import source_voc
from pipeline import configs
from trainer import model, names, serving
from trainer.config import PRECISIONS, NetConfig, PipelineConfig

SIZE = 256
MAX_BOXES = 8
BOX_COUNTS = (0, 2, 8)


def _median_ms(fn, repeats: int) -> float:
  fn()  # warm-up (graph building)
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    fn()
    times.append(time.perf_counter() - start)
  return 1000 * float(np.median(times))


def profiled_gflop(fn, *specs: tf.TensorSpec) -> float:
  """Floating-point operations of one call of `fn` on inputs of these (static) shapes."""
  graph = tf.function(fn, autograph=False).get_concrete_function(*specs).graph
  options = option_builder.ProfileOptionBuilder.float_operation()
  options['output'] = 'none'
  return model_analyzer.profile(graph, options=options).total_float_ops / 1e9


def request_gflop(fusion: model.FusionNet, boxes: int) -> float:
  """What the serving signature's nets compute for one image with `boxes` real boxes."""
  s, k = SIZE, MAX_BOXES
  gray = tf.TensorSpec([1, s, s, 1], tf.float32)
  if boxes == 0:
    return profiled_gflop(lambda g: fusion.full(g)[0], gray)
  return profiled_gflop(
      lambda g, c, b, m, slots: fusion.fused_real_boxes(g, None, c, b, m, slots),
      gray, tf.TensorSpec([boxes, s, s, 1], tf.float32),
      tf.TensorSpec([1, k, 4], tf.float32), tf.TensorSpec([1, k], tf.float32),
      tf.TensorSpec([boxes], tf.int32))


def request_boxes(count: int) -> tf.Tensor:
  """`count` distinct boxes of decreasing size (the signature keeps the K largest)."""
  return tf.constant([[[0.04 * i, 0.03 * i, 0.6 + 0.04 * i, 0.7 + 0.03 * i]
                       for i in range(count)]], tf.float32, shape=[1, count, 4])


def bench_net(overrides: Dict[str, Any], **fields: Any) -> Tuple[NetConfig, Tuple[str, ...]]:
  """(NetConfig, fusion points) of a net with these PipelineConfig `fields`, then --set's."""
  config = PipelineConfig(**fields).replace(**overrides)
  return config.net_config(), config.fusion_points


def fusion_net(config: NetConfig, fusion_points: Sequence[str] = names.FUSION_POINTS
               ) -> model.FusionNet:
  return model.FusionNet(config, model.ColorNet(config, 'full'),
                         model.ColorNet(config, 'instance'), fusion_points)


def export(fusion: model.FusionNet, config, path: str) -> None:
  colorizer = serving.Colorizer(fusion.model, names.FUSION, config,
                                predict=fusion.predict_real_boxes)
  serving.save(colorizer, path, colorizer.image_signatures())


def bench_width(width: float, precision: str, image: tf.Tensor, repeats: int,
                overrides: Dict[str, Any]) -> None:
  config, points = bench_net(overrides, image_size=SIZE, width=width, max_boxes=MAX_BOXES,
                             precision=precision)
  fusion = fusion_net(config, points)
  s = config.image_size
  backbone = tf.function(lambda g: fusion.full.model(g, training=False), autograph=False)
  backbone_gflop = profiled_gflop(lambda g: fusion.full(g)[0],
                                  tf.TensorSpec([1, s, s, 1], tf.float32))
  backbone_ms = _median_ms(lambda: backbone(tf.zeros([1, s, s, 1])), repeats)
  throughput = backbone_gflop / (backbone_ms / 1000)
  print(f'width {width}, {precision}: bare backbone forward {backbone_gflop:.2f} GFLOP in '
        f'{backbone_ms:.0f} ms = {throughput:.1f} GFLOP/s (this machine\'s conv throughput)',
        flush=True)
  with tempfile.TemporaryDirectory() as tmp:
    export(fusion, config, tmp)
    serve = tf.saved_model.load(tmp).signatures['serving_default']
    print(f"  {'boxes':>5} | {'GFLOP':>7} | {'ms':>7} | {'GFLOP/s':>7} | {'roofline ms':>11} | "
          f'ratio (goal <= 1.3)')
    for count in BOX_COUNTS:
      gflop = request_gflop(fusion, count)
      boxes = request_boxes(count)
      ms = _median_ms(lambda: serve(images=image, boxes=boxes), repeats)
      roofline_ms = 1000 * gflop / throughput
      print(f'  {count:>5} | {gflop:7.2f} | {ms:7.0f} | {gflop / (ms / 1000):7.1f} | '
            f'{roofline_ms:11.0f} | {ms / roofline_ms:.2f}', flush=True)


# The hinted request of --hints: this many points (SIGGRAPH17's curve reaches most of its gain).
BENCH_HINT_POINTS = 10


def bench_hints(width: float, precision: str, image: tf.Tensor, repeats: int,
                overrides: Dict[str, Any]) -> None:
  """Latency of colorize_with_hints against the same request without hints (module docstring)."""
  times = {}
  with tempfile.TemporaryDirectory() as tmp:
    for with_hints in (False, True):
      config, points = bench_net({**overrides, 'hints': with_hints}, image_size=SIZE,
                                 width=width, max_boxes=MAX_BOXES, precision=precision)
      path = os.path.join(tmp, str(with_hints))
      export(fusion_net(config, points), config, path)
      signatures = tf.saved_model.load(path).signatures
      for count in BOX_COUNTS:
        boxes = request_boxes(count)
        times[with_hints, count, 'plain'] = _median_ms(
            lambda: signatures['serving_default'](images=image, boxes=boxes), repeats)
        if with_hints:
          rng = np.random.default_rng(0)
          points = np.concatenate([rng.random([1, BENCH_HINT_POINTS, 5]),
                                   np.ones([1, BENCH_HINT_POINTS, 1])], -1).astype(np.float32)
          colors = tf.constant(np.concatenate([np.full([1, count, 3], 0.6),
                                               np.ones([1, count, 1])], -1), tf.float32)
          times[True, count, 'hints'] = _median_ms(
              lambda: signatures['colorize_with_hints'](
                  images=image, boxes=boxes, hints=tf.constant(points), box_colors=colors,
                  saturation=tf.ones([1])), repeats)
  print(f'width {width}, {precision}: ms per request (goal: hints <= 1.05x the same request '
        'without)', flush=True)
  print(f"  {'boxes':>5} | {'hint-free net':>13} | {'hint net, no hints':>18} | "
        f"{BENCH_HINT_POINTS} hints{' + box colours':<14} | hints / no hints | hint net / hint-free")
  for count in BOX_COUNTS:
    free, plain, hinted = (times[False, count, 'plain'], times[True, count, 'plain'],
                           times[True, count, 'hints'])
    print(f'  {count:>5} | {free:13.0f} | {plain:18.0f} | {hinted:22.0f} | '
          f'{hinted / plain:16.3f} | {plain / free:.3f}', flush=True)


def _exported(fusion: model.FusionNet, config, path: str, precision: str) -> str:
  """The fusion net's weights exported as a SavedModel computing in `precision`."""
  config = dataclasses.replace(config, precision=precision)
  if model.resolve_precision(precision) != model.resolve_precision(fusion.config.precision):
    copy = fusion_net(config, tuple(fusion.fusion_layers))
    copy.model.set_weights(fusion.model.get_weights())
    fusion = copy
  export(fusion, config, path)
  return path


def _alternating_ms(fns: Dict[str, object], repeats: int) -> Dict[str, float]:
  """Median ms of each fn, timed in alternating rounds (one call of each per round): drift of a
  shared machine over the minutes a run takes then weighs on every fn alike."""
  for fn in fns.values():
    fn()  # warm-up (graph building, interpreter allocation)
  times: Dict[str, List[float]] = {name: [] for name in fns}
  for _ in range(repeats):
    for name, fn in fns.items():
      start = time.perf_counter()
      fn()
      times[name].append(time.perf_counter() - start)
  return {name: 1000 * float(np.median(t)) for name, t in times.items()}


def bench_tflite(saved_models: Dict[str, str], image: bytes, repeats: int,
                 quantizations: Sequence[str]) -> None:
  """saved_models: precision -> SavedModel of one net (float32 first); see the module docstring."""
  from tools import export_tflite
  reference = saved_models['float32']
  saved_bytes = export_tflite.saved_model_bytes(reference)
  _, config = serving.load_net_record(reference)
  requests = {count: request_boxes(count).numpy()[0]
              for count in sorted({0, min(2, config.max_boxes), config.max_boxes})}
  runs, sizes = {}, {}  # row name -> request function(boxes); row name -> bytes
  for precision, path in saved_models.items():
    serve = tf.saved_model.load(path).signatures['serving_default']
    name = f'SavedModel {model.resolve_precision(precision)}'
    runs[name] = lambda b, serve=serve: serve(images=tf.constant([image]),
                                              boxes=tf.constant(b[None]))
    sizes[name] = saved_bytes
  float32 = next(iter(runs))
  with tempfile.TemporaryDirectory() as tmp:
    for quantize in quantizations:
      flatbuffer, config = export_tflite.convert(reference, quantize)
      path = os.path.join(tmp, f'{quantize}.tflite')
      with open(path, 'wb') as f:
        f.write(flatbuffer)
      runs[f'TFLite {quantize}'] = export_tflite.TFLiteColorizer(path, config)
      sizes[f'TFLite {quantize}'] = len(flatbuffer)
    times = {name: [] for name in runs}
    for boxes in requests.values():
      ms = _alternating_ms({name: (lambda run=run: run.colorize(image, boxes))
                            if isinstance(run, export_tflite.TFLiteColorizer)
                            else (lambda run=run: run(boxes))
                            for name, run in runs.items()}, repeats)
      for name, value in ms.items():
        times[name].append(value)
    print(f"  {'model':<26} | {'MB':>6} | {'x SavedModel':>12} | " +
          ' | '.join(f'{count} boxes ms' for count in requests) + ' | x SavedModel float32',
          flush=True)
    for name, ms in times.items():
      print(f"  {name:<26} | {sizes[name] / 1e6:6.1f} | {sizes[name] / saved_bytes:12.2f} | " +
            ' | '.join(f'{t:>{len(str(c)) + 9}.0f}' for c, t in zip(requests, ms)) + ' | ' +
            ', '.join(f'{t / base:.2f}' for t, base in zip(ms, times[float32])), flush=True)
    for name, run in runs.items():
      if isinstance(run, export_tflite.TFLiteColorizer):
        print(f'    {name}: {export_tflite.check(run, reference, _check_photos())}', flush=True)
        print(f'    {name}, each signature alone (interpreter only): ' +
              ', '.join(f'{signature} {ms:.0f} ms' for signature, ms in
                        _signature_ms(run, config, repeats).items()), flush=True)


def _signature_ms(tflite, config, repeats: int) -> Dict[str, float]:
  """Median ms of each signature of the file on random inputs with every slot a real box: what
  one box slot costs beyond `full`, without the request's pre- and post-processing."""
  from tools import export_tflite
  rng = np.random.default_rng(0)
  s = config.image_size
  gray = rng.uniform(-0.5, 0.5, [1, s, s, 1]).astype(np.float32)
  calls = {export_tflite.FULL_SIGNATURE: {'gray': gray}}
  for slots, signature in tflite.fused.items():
    calls[signature] = {'gray': gray, 'boxes': request_boxes(slots).numpy(),
                        'instance_gray': rng.uniform(-0.5, 0.5, [1, slots, s, s, 1]
                                                     ).astype(np.float32),
                        'box_mask': np.ones([1, slots], np.float32)}
  return {signature: _median_ms(lambda: tflite.runners[signature](**inputs), repeats)
          for signature, inputs in calls.items()}


def _check_photos():
  from tools import evaluate
  photos, _ = evaluate.read_photos(configs.SAMPLE_DATA_ROOT, 'val')
  return [(p.jpeg, p.boxes) for p in photos]


def compare_trained(model_uri: str, preset: str, data_dir: str, precisions: List[str],
                    overrides: Dict[str, Any]) -> None:
  """The trained fusion net exported per precision, scored on real photos (module docstring)."""
  from tools import evaluate
  results = {}
  # The points it was trained with, as its serving model's record names them.
  points = serving.recorded_fusion_points(serving.resolve_saved_model(model_uri))
  for precision in precisions:
    config = configs.get_config(preset, **{**overrides, 'precision': precision}).net_config()
    fusion = fusion_net(config, points)
    fusion.model.load_weights(names.weights_file(model_uri, 'fusion'))
    with tempfile.TemporaryDirectory() as tmp:
      export(fusion, config, os.path.join(tmp, 'model'))
      start = time.perf_counter()
      result = evaluate.evaluate(os.path.join(tmp, 'model'), data_dir, os.path.join(tmp, 'out'))
      seconds = time.perf_counter() - start
    # evaluate serves each photo twice (no boxes, truth boxes) and scores it: images/s of the
    # whole loop, the same work for every precision.
    results[precision] = (result['metrics'][evaluate.FUSION]['PSNR'],
                          2 * result['images'] / seconds)
    print(f'{precision} ({model.resolve_precision(precision)}): fusion PSNR '
          f'{results[precision][0]:.3f} dB on {result["images"]} photos, '
          f'{results[precision][1]:.1f} requests/s (serve + score)', flush=True)
  if 'float32' in results:
    psnr32, rate32 = results['float32']
    for precision, (psnr, rate) in results.items():
      if precision != 'float32':
        print(f'{precision} against float32: {rate / rate32:.2f}x requests/s, fusion PSNR '
              f'{psnr - psnr32:+.3f} dB')


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--widths', type=float, nargs='+', default=[0.25, 1.0])
  parser.add_argument('--repeats', type=int, default=5)
  parser.add_argument('--precisions', nargs='+', choices=PRECISIONS,
                      default=default_precisions())
  parser.add_argument('--trained', metavar='FUSION_MODEL_DIR',
                      help='fusion Trainer model artifact: compare precisions on real photos')
  parser.add_argument('--preset', default=configs.DEFAULT_PRESET, choices=sorted(configs.PRESETS),
                      help='the net of --trained (default: %(default)s)')
  parser.add_argument('--data-dir', default=os.path.join(
      configs.REPO_ROOT, '..', 'shared', 'data', 'imagenet1k', 'VOCdevkit', 'VOC2012'))
  parser.add_argument('--tflite', action='store_true',
                      help='the TFLite export against the SavedModel: size and latency')
  parser.add_argument('--quantizations', nargs='+', default=['float16'],
                      choices=['none', 'float16', 'dynamic'])
  parser.add_argument('--hints', action='store_true',
                      help='what colour hints cost a request (colorize_with_hints)')
  parser.add_argument('--presets', nargs='+', choices=sorted(configs.PRESETS),
                      help="with --tflite: each preset's own net instead of --widths at 256^2")
  parser.add_argument('--pushed', metavar='SERVING_DIR',
                      help='with --tflite: this pushed model instead of untrained nets')
  parser.add_argument('--set', action='append', default=[], metavar='KEY=VALUE',
                      help='override a config field of every net built here, as `run --set` '
                           'does (e.g. --set fusion_points=conv2_2,conv5_3)')
  args = parser.parse_args()
  overrides = configs.parse_overrides(args.set)
  if args.trained:
    compare_trained(args.trained, args.preset, args.data_dir, args.precisions, overrides)
    return
  photo = Image.open(os.path.join(source_voc(), 'JPEGImages', 'motorcycle_left.jpg'))
  buffer = io.BytesIO()
  photo.convert('RGB').resize((SIZE, SIZE)).save(buffer, format='JPEG', quality=95)
  image = tf.constant([buffer.getvalue()])
  measured = ('the pushed net' if args.tflite and args.pushed else
              "each preset's net" if args.tflite and args.presets else
              f'fusion net at {SIZE}^2, K={MAX_BOXES}')
  print(f'{measured}, one {SIZE}x{SIZE} JPEG per request, {os.cpu_count()} cores, median of '
        f'{args.repeats}' + (' (alternating rounds)' if args.tflite else ''), flush=True)
  if args.tflite and args.pushed:
    print(f'TFLite export of {args.pushed}', flush=True)
    bench_tflite({'float32': args.pushed}, image.numpy()[0], args.repeats, args.quantizations)
    return
  if args.tflite:
    # The float32 net is the reference the file and the other precisions are timed against.
    float32 = {**overrides, 'precision': 'float32'}
    if args.presets:
      nets = {f'preset {preset}': (c.net_config(), c.fusion_points) for preset in args.presets
              for c in [configs.get_config(preset, **float32)]}
    else:
      nets = {f'width {width}': bench_net(float32, image_size=SIZE, width=width,
                                          max_boxes=MAX_BOXES)
              for width in args.widths}
    for name, (config, fusion_points) in nets.items():
      fusion = fusion_net(config, fusion_points)
      points = ('' if fusion.fusion_layers.keys() == set(names.FUSION_POINTS) else
                f", fused at {', '.join(fusion.fusion_layers)}")
      print(f'{name} ({config.image_size}^2, width {config.width}, K={config.max_boxes}, '
            f'{config.objective}{points}): TFLite export against the SavedModel', flush=True)
      with tempfile.TemporaryDirectory() as tmp:
        bench_tflite({p: _exported(fusion, config, os.path.join(tmp, p), p)
                      for p in dict.fromkeys(['float32'] + args.precisions)},
                     image.numpy()[0], args.repeats, args.quantizations)
    return
  for width in args.widths:
    for precision in args.precisions:
      if args.hints:
        bench_hints(width, precision, image, args.repeats, overrides)
      else:
        bench_width(width, precision, image, args.repeats, overrides)


if __name__ == '__main__':
  main()
