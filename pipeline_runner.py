"""instcolor command line.

  python pipeline_runner.py run [--preset cpu] [--data-dir VOCdevkit/VOC2012 | PHOTOS --detector FILE] [--init-model DIR] [--pipeline-root DIR]
  python pipeline_runner.py colorize IMAGE... --model DIR [--boxes FILE | --detector HANDLE] --out DIR
                                    [--hints FILE] [--saturation S] [--format png|jpg]
                                    [--skip-existing]
  python pipeline_runner.py compile --image IMAGE --pipeline-root gs://... --data-dir gs://...
  python pipeline_runner.py replay pipeline.json --pipeline-root DIR
  python pipeline_runner.py lineage [--model latest|ARTIFACT_ID] [--json]
  python pipeline_runner.py evaluate --model DIR --data-dir VOC_DIR [--split val] [--hints 0,1,5] --out DIR
  python pipeline_runner.py export --model DIR --format tflite [--quantize float16] --out m.tflite
"""
from __future__ import annotations

import argparse
import os
import sys
import traceback
from typing import List, Optional

import pipeline  # noqa: F401  (sets the process up for the TFX stack; no TensorFlow import)
from pipeline import configs
from trainer import names

DEFAULT_PIPELINE_ROOT = 'instcolor_output'


class UsageError(Exception):
  """A bad flag or path, reported as one line without a traceback."""


def _config(args: argparse.Namespace) -> configs.PipelineConfig:
  """The validated config (no TensorFlow import: a bad --set fails in milliseconds)."""
  overrides = configs.parse_overrides(args.set)
  if getattr(args, 'ingest_detector', None):  # run/compile --detector: --set detector=...
    overrides['detector'] = args.ingest_detector
  if getattr(args, 'init_model', None):  # run --init-model: --set init_model=...
    overrides['init_model'] = args.init_model
  return configs.get_config(args.preset, **overrides)


def _voc_folder(path: str) -> str:
  """A local VOCdevkit year folder (one with JPEGImages/), as an absolute path."""
  path = os.path.abspath(path)
  if not os.path.isdir(os.path.join(path, 'JPEGImages')):
    raise UsageError(f'{path} has no JPEGImages/ folder; point --data-dir at a VOCdevkit year '
                     'folder such as VOCdevkit/VOC2012')
  return path


def _training_folder(path: str, config: configs.PipelineConfig) -> str:
  """`run`'s --data-dir as an absolute path: a VOCdevkit year folder, or a plain photo folder,
  which needs a detector (stages 2 and 3 learn from boxes)."""
  path = os.path.abspath(path)
  if os.path.isdir(os.path.join(path, 'JPEGImages')):
    return path
  if not os.path.isdir(path):
    raise UsageError(f'no folder at {path}')
  from components.voc_example_gen import voc
  if not voc.list_photos(path):
    raise UsageError(f'{path} has no photos (.jpg, .jpeg, .png) and no JPEGImages/ folder')
  if not config.detector:
    raise UsageError(
        f'{path} is a plain photo folder (no JPEGImages/ and Annotations/): its photos have no '
        'boxes, and the instance and fusion stages learn from boxes only. Give a detector to box '
        'them at ingest, e.g. --detector ../shared/models/ssd_mobilenet_v1_coco_quant/detect.tflite')
  return path


def _checked_init_model(config: configs.PipelineConfig) -> configs.PipelineConfig:
  """The config with init_model resolved to one SavedModel (a Pusher destination's newest
  version, a Trainer model's Format-Serving; absolute, so the cache key names exactly it), whose
  nets must fit this config's: a ConfigError naming what differs, before anything runs."""
  from trainer import serving
  source = serving.resolve_saved_model(config.init_model)
  if '://' not in source:
    source = os.path.abspath(source)
  serving.check_architecture(source, config.net_config())
  return config.replace(init_model=source)


def _detector(args: argparse.Namespace):
  """The --detector of colorize/evaluate, or None."""
  if not args.detector:
    return None
  from components import detectors
  return detectors.load_detector(args.detector, args.score_threshold, args.max_detections)


def _failed_components(pipeline_root: str) -> List[str]:
  """Components whose latest execution failed, from ML Metadata (empty if there is none yet)."""
  from ml_metadata.proto import metadata_store_pb2

  from tools import metadata
  try:
    store = metadata.open_store(pipeline_root)
  except FileNotFoundError:
    return []
  return [node for node, execution in metadata.latest_executions(store).items()
          if execution.last_known_state == metadata_store_pb2.Execution.FAILED]


def _set_log_levels(verbose: bool) -> None:
  """Quiet by default: TFX, Beam and TensorFlow log through Python logging (and absl) in this
  process, and report progress and results through our own lines instead. --verbose: INFO."""
  import logging

  # Before TensorFlow loads (also read by the Beam workers it starts): its C++ start-up lines.
  os.environ['TF_CPP_MIN_LOG_LEVEL'] = '0' if verbose else '3'
  from absl import logging as absl_logging

  level = logging.INFO if verbose else logging.ERROR
  absl_logging.set_verbosity(absl_logging.INFO if verbose else absl_logging.ERROR)
  for name in ('', 'absl', 'apache_beam', 'tensorflow', 'tfx'):
    logging.getLogger(name).setLevel(level)


def cmd_run(args: argparse.Namespace) -> int:
  config = _config(args)
  from trainer import backbone
  backbone.check_available(config.backbone_init)  # e.g. no network for Keras' ImageNet VGG16
  data_roots = [d if '://' in d else _training_folder(d, config)
                for d in args.data_dir or [configs.SAMPLE_DATA_ROOT]]
  if len(set(data_roots)) < len(data_roots):
    raise UsageError(f'a --data-dir is given twice: {data_roots}')
  if config.detector and '://' not in config.detector:  # a local file or SavedModel folder
    if not os.path.exists(config.detector):
      raise UsageError(f'no detector at {config.detector}')
    config = config.replace(detector=os.path.abspath(config.detector))
  if config.init_model:
    config = _checked_init_model(config)
  pipeline_root = os.path.abspath(args.pipeline_root)
  os.makedirs(pipeline_root, exist_ok=True)

  _set_log_levels(args.verbose)
  from tfx import v1 as tfx

  from pipeline import pipeline as pipeline_module
  from tools import metadata, progress, quiet, summary

  print(f'instcolor: preset {config.preset}, data {" + ".join(data_roots)}, pipeline root '
        f'{pipeline_root}', flush=True)
  tfx_pipeline = pipeline_module.create_pipeline(
      config, data_root=data_roots, pipeline_root=pipeline_root,
      metadata_connection_config=metadata.connection_config(pipeline_root),
      beam_pipeline_args=configs.default_beam_args(args.beam_arg),
      enable_cache=not args.no_cache, serving_model_dir=args.serving_dir)
  # TFX's Beam executors parse sys.argv + Beam args with absl; our own flags are already read.
  sys.argv = sys.argv[:1]
  try:
    with quiet.quiet_stderr(not args.verbose), progress.ComponentProgress(pipeline_root):
      tfx.orchestration.LocalDagRunner().run(tfx_pipeline)
  except Exception:  # a failure inside a component: keep its traceback, name the component
    traceback.print_exc()
    failed = ', '.join(_failed_components(pipeline_root)) or 'a component'
    print(f'error: {failed} failed (traceback above). Finished components are kept in '
          f'{pipeline_root}; the next run reuses them and starts from the failed one.',
          file=sys.stderr)
    return 1
  summary.print_summary(pipeline_root)
  return 0


def cmd_compile(args: argparse.Namespace) -> int:
  """Kubeflow Pipelines V2 / Vertex AI spec, from the same create_pipeline as a local run."""
  config = _config(args)
  _set_log_levels(args.verbose)
  from tools import quiet

  with quiet.quiet_stderr(not args.verbose):
    from pipeline import kubeflow, vertex
    from pipeline import pipeline as pipeline_module

    vertex_training = vertex.parse(args.vertex_training, args.image, config)
    tfx_pipeline = pipeline_module.create_pipeline(
        config, data_root=args.data_dir, pipeline_root=args.pipeline_root,
        beam_pipeline_args=list(args.beam_arg),
        serving_model_dir=args.serving_dir or f'{args.pipeline_root}/serving_model',
        schema_dir=f'{args.container_root}/schema', vertex_training=vertex_training)
    kubeflow.compile_spec(tfx_pipeline, args.image, args.output)
  print(f'wrote {args.output} (image {args.image}, pipeline root {args.pipeline_root})')
  if vertex_training:
    print(f'  the three Trainers run as Vertex AI custom jobs in {vertex_training.project} / '
          f'{vertex_training.region}: {vertex_training.replicas} x {vertex_training.machine_type}'
          + (f' with {vertex_training.accelerator_count} x {vertex_training.accelerator_type}'
             if vertex_training.accelerator_type else ''))
  return 0


def cmd_replay(args: argparse.Namespace) -> int:
  """Runs a compiled spec locally, each task through the image's entrypoint (tools/replay.py)."""
  if not os.path.isfile(args.spec):
    raise UsageError(f'{args.spec} is not a file; write one with `pipeline_runner.py compile`')
  from tools import replay

  try:
    runs = replay.Replay(args.spec, args.pipeline_root, dockerfile=args.dockerfile).run()
  except replay.ReplayError as e:
    print(f'error: {e}', file=sys.stderr)
    return 1
  counts = {status: sum(r.status == status for r in runs) for status in ('ran', 'cached',
                                                                          'resolved')}
  print('replay done: ' + ', '.join(f'{n} {status}' for status, n in counts.items()))
  for run in runs:
    for artifact in run.outputs.get('pushed_model', []):
      metadata = artifact.get('metadata', {})
      print(f'pushed: {metadata.get("pushed_destination")}' if metadata.get('pushed')
            else 'not pushed (the Evaluator did not bless the model)')
  return 0


def cmd_lineage(args: argparse.Namespace) -> int:
  import json

  from tools import lineage

  artifact_id = None if args.model == 'latest' else int(args.model)
  entries = lineage.lineage(os.path.abspath(args.pipeline_root), artifact_id)
  print(json.dumps(entries, indent=2, default=str) if args.json else lineage.format_chain(entries))
  return 0


def cmd_colorize(args: argparse.Namespace) -> int:
  _set_log_levels(args.verbose)
  from tools import colorize, quiet

  detector = _detector(args)
  boxes = colorize.load_boxes_file(args.boxes) if args.boxes else None
  hints = None
  if args.hints:
    from tools import hints_file
    try:
      hints = hints_file.load(args.hints)
    except hints_file.HintsError as e:  # one line naming the photo and the field
      raise UsageError(f'--hints {e}') from None
  with quiet.quiet_stderr(not args.verbose):
    outcome = colorize.colorize_files(
        args.model, args.images, args.out, boxes=boxes, detector=detector,
        batch_size=args.batch_size, side_by_side=args.side_by_side, saturation=args.saturation,
        image_format=args.format, quality=args.quality, skip_existing=args.skip_existing,
        hints=hints)
  if outcome.interrupted:
    return 130  # as a shell reports a Ctrl-C
  return 1 if outcome.failed else 0


def cmd_evaluate(args: argparse.Namespace) -> int:
  _set_log_levels(args.verbose)
  from tools import evaluate, quiet

  data_dir = _voc_folder(args.data_dir)
  detector = _detector(args)
  with quiet.quiet_stderr(not args.verbose):
    result = evaluate.evaluate(args.model, data_dir, args.out, split=args.split,
                               detector=detector, hint_counts=args.hints)
  print(evaluate.format_table(result))
  print(f"wrote {os.path.join(args.out, 'metrics.json')}, per_image.csv and "
        f"{len(result['gallery'])} gallery page(s) to {args.out}")
  return 0


def _bounded_number(kind, low, high, what):
  def parse(text: str):
    try:
      value = kind(text)
    except ValueError:
      raise argparse.ArgumentTypeError(f'{text!r} is not a number') from None
    if not low <= value <= high:
      raise argparse.ArgumentTypeError(f'{what} must be in [{low}, {high}], not {text}')
    return value
  return parse


_saturation = _bounded_number(float, 0.0, names.MAX_SATURATION, 'saturation')


def _hint_counts(text: str) -> List[int]:
  """'0,1,2,5,10,20' -> [0, 1, 2, 5, 10, 20]."""
  try:
    counts = [int(part) for part in text.split(',') if part.strip()]
  except ValueError:
    raise argparse.ArgumentTypeError(f'{text!r} is not a list of hint counts like 0,1,2,5,10,20'
                                     ) from None
  if not counts or min(counts) < 0:
    raise argparse.ArgumentTypeError(f'hint counts must be integers >= 0, got {text!r}')
  return counts
_jpeg_quality = _bounded_number(int, 1, 100, 'JPEG quality')


def cmd_export(args: argparse.Namespace) -> int:
  """The pushed model as a TFLite file, checked against the SavedModel on real photos."""
  _set_log_levels(args.verbose)
  from tools import colorize, evaluate, export_tflite, quiet

  check_dir = _voc_folder(args.check_data)
  with quiet.quiet_stderr(not args.verbose):
    flatbuffer, config = export_tflite.convert(args.model, args.quantize)
    colorize.write_atomically(args.out, flatbuffer)
    saved = export_tflite.saved_model_bytes(args.model)
    tflite = export_tflite.TFLiteColorizer(args.out, config)
    print(f'wrote {args.out}: {len(flatbuffer) / 1e6:.1f} MB, {len(flatbuffer) / saved:.2f} x the '
          f'SavedModel ({saved / 1e6:.1f} MB); quantization {args.quantize}; signatures '
          f'{", ".join(tflite.interpreter.get_signature_list())} at '
          f'{config.image_size}x{config.image_size}', flush=True)
    photos, _ = evaluate.read_photos(check_dir, args.check_split)
    print(export_tflite.check(tflite, args.model, [(p.jpeg, p.boxes) for p in photos]))
  return 0


def build_parser() -> argparse.ArgumentParser:
  # Flags shared by `run` and `compile` (one definition each, through parent parsers).
  config_flags = argparse.ArgumentParser(add_help=False)
  config_flags.add_argument('--preset', default=configs.DEFAULT_PRESET,
                            choices=sorted(configs.PRESETS))
  config_flags.add_argument('--set', action='append', default=[], metavar='KEY=VALUE',
                            help='override one config field, e.g. --set image_size=128 or '
                                 '--set full.epochs=5 (repeatable)')
  pipeline_flags = argparse.ArgumentParser(add_help=False)
  pipeline_flags.add_argument('--beam-arg', action='append', default=[], metavar='ARG',
                              help='Beam option for every Beam component, e.g. '
                                   '--beam-arg=--direct_num_workers=2 (repeatable)')
  pipeline_flags.add_argument('--serving-dir', default=None,
                              help='Pusher destination (default: <pipeline root>/serving_model)')
  pipeline_flags.add_argument('--detector', dest='ingest_detector', metavar='HANDLE',
                              help='box the photos without annotations at ingest (a plain photo '
                                   'folder, or VOC images missing their XML): TFLite SSD file, '
                                   'SavedModel or tensorflow_hub handle; the same as --set '
                                   'detector=HANDLE (score: --set detector_score=0.5)')

  parser = argparse.ArgumentParser(prog='pipeline_runner.py', description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  commands = parser.add_subparsers(dest='command', required=True)
  run = commands.add_parser('run', parents=[config_flags, pipeline_flags],
                            help='run the pipeline locally with LocalDagRunner')
  run.add_argument('--data-dir', action='append',
                   help='VOCdevkit year folder, or a folder of photos in any tree with --detector '
                        '(default: the bundled sample); repeat it to train on several sources, '
                        'their ids namespaced by folder name')
  run.add_argument('--pipeline-root', default=DEFAULT_PIPELINE_ROOT,
                   help='outputs and the sqlite MLMD go here (default: ./%(default)s)')
  run.add_argument('--init-model', metavar='DIR',
                   help='fine-tune: every stage starts from this model\'s nets (a pushed model, '
                        'a Pusher destination or a Trainer model of the same architecture)')
  run.add_argument('--no-cache', action='store_true', help='re-run every component')
  run.add_argument('--verbose', action='store_true', help='TFX/Beam INFO logs')
  run.set_defaults(func=cmd_run)

  compile_ = commands.add_parser(
      'compile', parents=[config_flags, pipeline_flags],
      help='compile for Kubeflow Pipelines V2 / Vertex AI (no cluster needed)')
  compile_.add_argument('--image', required=True,
                        help='container image with this project installed (see Dockerfile)')
  compile_.add_argument('--pipeline-root', required=True, help='e.g. gs://bucket/instcolor')
  compile_.add_argument('--data-dir', required=True, action='append',
                        help='VOCdevkit year folder as seen by the pipeline, e.g. '
                             'gs://bucket/VOC2012 (repeatable: several sources)')
  compile_.add_argument('--output', default='pipeline.json')
  compile_.add_argument('--container-root', default='/instcolor',
                        help='where the project lives inside the image (default: %(default)s)')
  compile_.add_argument(
      '--vertex-training', metavar='KEY=VALUE,...',
      help='train the three Trainers as Vertex AI custom jobs (TFX\'s Google Cloud AI Platform '
           'Trainer): project=P,machine_type=M[,accelerator_type=T,accelerator_count=N]'
           '[,replicas=R][,region=us-central1]')
  compile_.add_argument('--verbose', action='store_true', help='TensorFlow and TFX logs')
  compile_.set_defaults(func=cmd_compile)

  replay = commands.add_parser(
      'replay', help='run a compiled spec locally, task by task, as its container image would')
  replay.add_argument('spec', help='the JSON written by `compile` (compile it with local '
                                   '--pipeline-root and --data-dir to replay it here)')
  replay.add_argument('--pipeline-root', required=True,
                      help='local folder for the tasks\' outputs (stands for the job\'s root)')
  replay.add_argument('--dockerfile', default=os.path.join(os.path.dirname(
      os.path.abspath(__file__)), 'Dockerfile'), help='the image recipe (default: ./Dockerfile)')
  replay.set_defaults(func=cmd_replay)

  trace = commands.add_parser('lineage', help='trace a pushed model back to its data (MLMD)')
  trace.add_argument('--pipeline-root', default=DEFAULT_PIPELINE_ROOT)
  trace.add_argument('--model', default='latest',
                     help="'latest' pushed model, or an artifact id (default: %(default)s)")
  trace.add_argument('--json', action='store_true', help='machine-readable output')
  trace.set_defaults(func=cmd_lineage)

  # Flags shared by `colorize` and `evaluate`, which run a pushed model.
  model_flags = argparse.ArgumentParser(add_help=False)
  model_flags.add_argument('--score-threshold', type=float, default=0.7,
                              help='detector boxes scoring at least this (default: %(default)s)')
  model_flags.add_argument('--max-detections', type=int, default=8)
  model_flags.add_argument('--verbose', action='store_true', help='TensorFlow logs')

  paint = commands.add_parser('colorize', parents=[model_flags],
                              help='colorize images with a pushed model')
  paint.add_argument('images', nargs='+', metavar='IMAGE',
                     help='image files, folders (their images, recursively) or globs')
  paint.add_argument('--model', required=True,
                     help='pushed SavedModel folder, or the Pusher destination (newest version)')
  paint.add_argument('--out', required=True,
                     help='folder for the colorized images and manifest.csv')
  boxes = paint.add_mutually_exclusive_group()
  boxes.add_argument('--boxes', help='JSON {"image": [[ymin, xmin, ymax, xmax], ...]} (normalised; '
                                     'a photo with an EXIF orientation: as it is shown upright)')
  boxes.add_argument('--detector', metavar='HANDLE',
                     help='TFLite SSD file (.tflite), or tensorflow_hub handle or local SavedModel '
                          'of a TF Object Detection API detector (detection_boxes, '
                          'detection_scores)')
  paint.add_argument('--hints', metavar='FILE',
                     help='colour hints for a model trained with hints: JSON {"photo.jpg": '
                          '{"points": [[y, x, "#aa3311"], ...], "boxes": [[ymin, xmin, ymax, '
                          'xmax, "red"], ...]}} (normalised, upright; "#rgb", "#rrggbb" or a '
                          'colour name); boxes with a colour also join the photo\'s boxes')
  paint.add_argument('--batch-size', type=int, default=8,
                     help='images per call of the model (default: %(default)s)')
  paint.add_argument('--side-by-side', action='store_true',
                     help='write gray input | colorized side by side')
  paint.add_argument('--saturation', type=_saturation, default=1.0, metavar='S',
                     help='scale the colour (ab) by S, kept displayable with its hue and '
                          'lightness; 0 is gray, 1 the model\'s own (default), up to 4. '
                          '`evaluate` prints the S that reaches the truth\'s colourfulness')
  paint.add_argument('--format', choices=('png', 'jpg'), default='png',
                     help='output format (default: %(default)s); either keeps the input\'s EXIF '
                          '(orientation set to 1: the output is upright), ICC profile and DPI')
  paint.add_argument('--quality', type=_jpeg_quality, default=95,
                     help='JPEG quality 1-100 with --format jpg (default: %(default)s)')
  paint.add_argument('--skip-existing', action='store_true',
                     help='leave photos whose output exists (resume a stopped run); without it, '
                          'outputs are overwritten')
  paint.set_defaults(func=cmd_colorize)

  score = commands.add_parser(
      'evaluate', parents=[model_flags],
      help='score a pushed model on a VOC folder: gray baseline, full-image, fusion, truth')
  score.add_argument('--model', required=True,
                     help='pushed SavedModel folder, or the Pusher destination (newest version)')
  score.add_argument('--data-dir', required=True, help='VOCdevkit year folder')
  score.add_argument('--split', default='val',
                     help='ImageSets/Main/<split>.txt; every image without it (default: %(default)s)')
  score.add_argument('--detector', metavar='HANDLE',
                     help='also score fusion with this detector\'s boxes (TFLite SSD file, '
                          'tensorflow_hub handle or local SavedModel)')
  score.add_argument('--hints', type=_hint_counts, default=[], metavar='COUNTS',
                     help='also score with this many colour hints per photo, e.g. 0,1,2,5,10,20 '
                          '(random points with the truth\'s colour, the same for every model; '
                          'models trained with hints): table, metrics.json, psnr_vs_hints.png')
  score.add_argument('--out', required=True,
                     help='folder for metrics.json, per_image.csv and gallery pages')
  score.set_defaults(func=cmd_evaluate)

  export = commands.add_parser(
      'export', help='write a pushed model as a TFLite file (tools/export_tflite.py)')
  export.add_argument('--model', required=True,
                      help='pushed SavedModel folder, or the Pusher destination (newest version)')
  export.add_argument('--format', choices=('tflite',), default='tflite')
  export.add_argument('--quantize', choices=('none', 'float16', 'dynamic'), default='none',
                      help='weights in float16 (half the size, float kernels), or int8 with '
                           'dynamic-range kernels (a quarter); default: float32')
  export.add_argument('--out', required=True, help='the .tflite file to write')
  export.add_argument('--check-data', default=configs.SAMPLE_DATA_ROOT,
                      help='VOC folder whose photos (and boxes) the export is checked on against '
                           'the SavedModel (default: the bundled sample)')
  export.add_argument('--check-split', default='val',
                      help='its ImageSets/Main/<split>.txt (default: %(default)s)')
  export.add_argument('--verbose', action='store_true', help='TensorFlow logs')
  export.set_defaults(func=cmd_export)
  return parser


def main(argv: Optional[List[str]] = None) -> int:
  args = build_parser().parse_args(argv)
  try:
    return args.func(args)
  except (configs.ConfigError, UsageError, LookupError, FileNotFoundError) as e:
    # Bad settings, flags or paths, raised before any component runs: one line, no traceback.
    # (Failures inside a pipeline run keep theirs: see cmd_run.)
    if os.environ.get('INSTCOLOR_DEBUG'):
      raise
    print(f'error: {e}', file=sys.stderr)
    return 2


if __name__ == '__main__':
  sys.exit(main())
