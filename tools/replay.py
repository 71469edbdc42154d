"""Replay a compiled Kubeflow V2 / Vertex spec on this machine, task by task, as the image would run it.

What a KFP V2 launcher does for each task, done here:
  * the image's WORKDIR is a local folder holding exactly what the Dockerfile's COPY lines copy
    (tools/container.py), and every task runs in a subprocess with that working directory and the
    Dockerfile's ENV (PYTHONPATH, TF_USE_LEGACY_KERAS), paths under WORKDIR translated to it;
  * the task's ExecutorInput is built from the spec: constant parameters, upstream output artifacts
    (uri, name and the metadata their executor reported) typed by the consuming component, and a
    fresh uri per output artifact under <root>/<job>/<task>/;
  * the container's own command and arguments run, `{{$}}` replaced by that ExecutorInput; a
    preCacheCheck hook (the ExampleGen driver) runs first, and its parameter values join the cache
    key and reach the executor through the executor output file, as on Vertex;
  * resolver tasks answer their artifact queries from the artifacts of earlier replays under the
    same root (the replay's stand-in for Vertex ML Metadata);
  * a task whose cache key (component, container, parameters, driver output, input artifacts)
    matches a succeeded task of an earlier replay under the root is reused, as with Vertex's
    execution cache.

What differs from a real launcher: README, "Replaying the compiled spec here".
"""
from __future__ import annotations

import dataclasses
import datetime
import glob
import hashlib
import json
import os
import re
import subprocess
import sys
import time
from typing import Callable, Dict, List, Optional

from tools import container

RECORD = 'replay.json'
LOG = 'log.txt'
EXECUTOR_OUTPUT = 'executor_output.json'
_ALL_INPUTS = '{{$}}'
_INPUT_METADATA = re.compile(
    r"\{\{\$\.inputs\.artifacts\['(?P<key>\w+)'\]\.metadata\['(?P<field>\w+)'\]\}\}")
# Runs a module as `python -m` would, without this checkout's editable-install finder: inside the
# image the project resolves from WORKDIR (PYTHONPATH) only, so a module the Dockerfile does not
# copy must fail here too instead of being found in the checkout.
_BOOT = ('import runpy, sys; '
         "sys.meta_path[:] = [f for f in sys.meta_path "
         "if not str(getattr(f, '__module__', '')).startswith('__editable__')]; "
         'module = sys.argv[1]; sys.argv = [module] + sys.argv[2:]; '
         "runpy.run_module(module, run_name='__main__', alter_sys=True)")


# Trainers compiled as Vertex AI custom jobs (compile --vertex-training): the executor that would
# start the job -> the one its replicas run, which the replay runs here instead.
VERTEX_TRAINERS = {
    'tfx.extensions.google_cloud_ai_platform.trainer.executor.GenericExecutor':
        'tfx.components.trainer.executor.GenericExecutor',
    'components.fusion_trainer.executor.VertexExecutor':
        'components.fusion_trainer.executor.Executor',
}
_EXECUTOR_CLASS_FLAG = '--executor_class_path'


class ReplayError(RuntimeError):
  """A task failed or the spec asks for something the replay cannot do; names the task."""


@dataclasses.dataclass
class TaskRun:
  name: str
  status: str  # 'ran', 'cached' or 'resolved'
  seconds: float
  outputs: Dict[str, List[dict]]  # output key -> runtime artifacts (name, uri, metadata, type)


def topological_order(tasks: Dict[str, dict]) -> List[str]:
  """Task names, each after every task it depends on (dependentTasks and artifact producers)."""
  def upstream(name: str) -> List[str]:
    task = tasks[name]
    producers = [a['taskOutputArtifact']['producerTask']
                 for a in task.get('inputs', {}).get('artifacts', {}).values()
                 if 'taskOutputArtifact' in a]
    return sorted(set(task.get('dependentTasks', [])) | set(producers))

  order: List[str] = []
  state: Dict[str, str] = {}

  def visit(name: str, path: List[str]) -> None:
    if state.get(name) == 'done':
      return
    if state.get(name) == 'visiting':
      raise ReplayError(f'the spec\'s tasks form a cycle: {" -> ".join(path + [name])}')
    if name not in tasks:
      raise ReplayError(f'task {path[-1]} depends on {name}, which the spec does not define')
    state[name] = 'visiting'
    for parent in upstream(name):
      visit(parent, path + [name])
    state[name] = 'done'
    order.append(name)

  for name in sorted(tasks):
    visit(name, [])
  return order


class Replay:
  """One replay of a compiled job JSON (pipeline_runner.py compile's output) under a local root."""

  def __init__(self, job_path: str, pipeline_root: str, dockerfile: str = os.path.join(
      container.REPO_ROOT, 'Dockerfile'), context: str = container.REPO_ROOT,
               python: str = sys.executable, log: Callable[[str], None] = print):
    with open(job_path) as f:
      self.spec = json.load(f)['pipelineSpec']
    self.root = os.path.abspath(pipeline_root)
    self.dockerfile = container.Dockerfile.parse(dockerfile)
    self.context = context
    self.python = python
    self.log = log
    self.job_id = 'replay-' + datetime.datetime.now().strftime('%Y%m%d-%H%M%S-%f')
    self.job_dir = os.path.join(self.root, self.job_id)
    self.workdir = os.path.join(self.job_dir, 'image', self.dockerfile.workdir.strip('/'))
    self.record: Dict[str, dict] = {}
    # Earlier replays' records under the root, oldest first: read once, they do not change.
    self.earlier: List[dict] = [_read_json(path).get('tasks', {}) for path in sorted(
        glob.glob(os.path.join(self.root, 'replay-*', RECORD)))]

  # --- set-up ---------------------------------------------------------------------------------

  def check_recipe(self) -> None:
    problems = container.recipe_problems(self.spec, self.dockerfile, self.context)
    if problems:
      raise ReplayError('the image the Dockerfile builds cannot run this spec:\n  ' +
                        '\n  '.join(problems))

  def _in_image(self, text: str) -> str:
    """A string of the spec or the Dockerfile's ENV with WORKDIR paths pointing at the stage."""
    root = self.dockerfile.workdir.rstrip('/')
    # A whole path only: not /home/me/instcolor/data when WORKDIR is /instcolor.
    return re.sub(r'(?<![\w./-])' + re.escape(root) + r'(?=/|$|:|")', self.workdir, text)

  def _env(self) -> Dict[str, str]:
    env = dict(os.environ)
    env.update({k: self._in_image(v) for k, v in self.dockerfile.env.items()})
    return env

  # --- one task -------------------------------------------------------------------------------

  def _component(self, task: dict) -> dict:
    return self.spec['components'][task['componentRef']['name']]

  def _executor(self, task: dict) -> dict:
    return self.spec['deploymentSpec']['executors'][self._component(task)['executorLabel']]

  def _parameters(self, name: str, task: dict) -> Dict[str, dict]:
    """The task's constant parameters as the spec has them (image paths)."""
    parameters = {}
    for key, value in task.get('inputs', {}).get('parameters', {}).items():
      if 'runtimeValue' not in value:
        raise ReplayError(f'task {name}: parameter {key} is {value}; the replay supports constant '
                          f'parameters only (no pipeline-level or upstream parameters)')
      parameters[key] = value['runtimeValue']['constantValue']
    return parameters

  def _staged(self, parameters: Dict[str, dict]) -> Dict[str, dict]:
    """Parameters with image paths pointing at the staged WORKDIR."""
    return {key: {**value, 'stringValue': self._in_image(value['stringValue'])}
            if 'stringValue' in value else value for key, value in parameters.items()}

  def _input_artifacts(self, name: str, task: dict) -> Dict[str, dict]:
    definitions = self._component(task).get('inputDefinitions', {}).get('artifacts', {})
    artifacts = {}
    for key, source in task.get('inputs', {}).get('artifacts', {}).items():
      if 'taskOutputArtifact' not in source:
        raise ReplayError(f'task {name}: input {key} is {source}; the replay supports upstream '
                          f'task outputs only')
      producer = source['taskOutputArtifact']
      produced = self.record[producer['producerTask']]['outputs'].get(
          producer['outputArtifactKey'], [])
      artifacts[key] = {'artifacts': [
          {**_without_type(a), 'type': definitions[key]['artifactType']} for a in produced]}
    return artifacts

  def _output_artifacts(self, name: str, task: dict, task_dir: str) -> Dict[str, dict]:
    definitions = self._component(task).get('outputDefinitions', {}).get('artifacts', {})
    return {key: {'artifacts': [{'name': f'{self.job_id}/{name}/{key}',
                                 'uri': os.path.join(task_dir, key),
                                 'type': definition['artifactType'], 'metadata': {}}]}
            for key, definition in definitions.items()}

  def _command(self, name: str, command: List[str], args: List[str],
               executor_input: dict) -> List[str]:
    if command[:2] != ['python', '-m'] or len(command) != 3:
      raise ReplayError(f'task {name}: command {command} is not `python -m <module>`, the form '
                        f'TFX compiles and the replay runs')
    filled = []
    for arg in args:
      if arg == _ALL_INPUTS:
        filled.append(json.dumps(executor_input))
      elif '{{$' in arg:
        raise ReplayError(f'task {name}: argument placeholder {arg} is not supported by the replay')
      else:
        filled.append(self._in_image(arg))
    return [self.python, '-c', _BOOT, command[2], *filled]

  def _run(self, name: str, argv: List[str], task_dir: str, what: str) -> None:
    log_path = os.path.join(task_dir, LOG)
    with open(log_path, 'a') as log:
      log.write(f'$ {what}\n')
      log.flush()
      code = subprocess.run(argv, cwd=self.workdir, env=self._env(), stdout=log,
                            stderr=subprocess.STDOUT, check=False).returncode
    if code:
      with open(log_path) as f:
        tail = f.read().splitlines()[-30:]
      raise ReplayError(f'task {name} failed: its {what} exited with {code}. Last lines of '
                        f'{log_path}:\n' + '\n'.join(tail))

  def run_container_task(self, name: str, task: dict) -> TaskRun:
    start = time.perf_counter()
    task_dir = os.path.join(self.job_dir, name)
    os.makedirs(task_dir, exist_ok=True)
    spec = self._executor(task)['container']
    parameters = self._parameters(name, task)
    executor_input = {
        'inputs': {'parameters': self._staged(parameters),
                   'artifacts': self._input_artifacts(name, task)},
        'outputs': {'artifacts': self._output_artifacts(name, task, task_dir),
                    'outputFile': os.path.join(task_dir, EXECUTOR_OUTPUT)},
    }
    driver_parameters = {}
    hook = spec.get('lifecycle', {}).get('preCacheCheck')
    if hook:
      self._run(name, self._command(name, hook['command'], hook['args'], executor_input),
                task_dir, f'preCacheCheck {hook["command"][-1]}')
      driver_parameters = _read_json(executor_input['outputs']['outputFile']).get(
          'parameterValues', {})
    # As on Vertex, the key sees the spec's own values, not where this replay staged the image.
    key = _cache_key(self._component(task), spec, parameters, executor_input['inputs']['artifacts'],
                     driver_parameters)
    cached = (self._cached(name, key) if task.get('cachingOptions', {}).get('enableCache')
              else None)
    if cached is not None:
      return TaskRun(name, 'cached', time.perf_counter() - start, cached)
    self._run(name, self._command(name, spec['command'], self._local_training(name, spec,
                                                                                 parameters),
                                  executor_input),
              task_dir, f'executor {spec["command"][-1]}')
    outputs = _merge_outputs(executor_input['outputs']['artifacts'],
                             _read_json(executor_input['outputs']['outputFile']))
    self.record[name] = {'cache_key': key}
    return TaskRun(name, 'ran', time.perf_counter() - start, outputs)

  def _local_training(self, name: str, container_spec: dict,
                      parameters: Dict[str, dict]) -> List[str]:
    """The container's arguments, a Vertex AI training task's changed to train here: the job it
    would start is checked (its worker pools run this task's image), not started."""
    args = list(container_spec['args'])
    if _EXECUTOR_CLASS_FLAG not in args:
      return args
    at = args.index(_EXECUTOR_CLASS_FLAG) + 1
    local = VERTEX_TRAINERS.get(args[at])
    if local is None:
      return args
    custom_config = json.loads(parameters.get('custom_config', {}).get('stringValue') or '{}')
    job = custom_config.get('ai_platform_training_args') or {}
    pools = (job.get('job_spec') or {}).get('worker_pool_specs') or []
    problems = []
    if custom_config.get('ai_platform_enable_vertex') is not True:
      problems.append('ai_platform_enable_vertex is not true')
    if not job.get('project'):
      problems.append('the job has no project')
    if not pools:
      problems.append('the job has no worker_pool_specs')
    for index, pool in enumerate(pools):
      image = pool.get('container_spec', {}).get('image_uri')
      if image != container_spec['image']:
        problems.append(f'worker pool {index} runs image {image!r}, not the pipeline\'s '
                        f'{container_spec["image"]!r}')
      if not pool.get('machine_spec', {}).get('machine_type'):
        problems.append(f'worker pool {index} has no machine_type')
      if not pool.get('replica_count', 0) >= 1:
        problems.append(f'worker pool {index} has no replicas')
    if problems:
      raise ReplayError(f'task {name}: its Vertex AI training job spec is incomplete: '
                        + '; '.join(problems))
    replicas = sum(pool['replica_count'] for pool in pools)
    machine = pools[0]['machine_spec']
    self.log(f'      Vertex AI job checked ({replicas} x {machine["machine_type"]}'
             + (f' with {machine.get("accelerator_count")} x {machine["accelerator_type"]}'
                if machine.get('accelerator_type') else '')
             + f', image {container_spec["image"]}); training here with {local}')
    args[at] = local
    return args

  def run_resolver_task(self, name: str, task: dict) -> TaskRun:
    start = time.perf_counter()
    queries = self._executor(task)['resolver']['outputArtifactQueries']
    inputs = self._input_artifacts(name, task)
    definitions = self._component(task).get('outputDefinitions', {}).get('artifacts', {})
    outputs = {}
    for key, query in queries.items():
      found = _query(self._known_artifacts(), self._fill_query(name, query['filter'], inputs))
      outputs[key] = [{**a, 'type': definitions[key]['artifactType']} for a in found[-1:]]
    return TaskRun(name, 'resolved', time.perf_counter() - start, outputs)

  def _fill_query(self, name: str, text: str, inputs: Dict[str, dict]) -> str:
    def value(match):
      artifacts = inputs.get(match['key'], {}).get('artifacts', [])
      # No upstream artifact (nothing blessed yet): a value no artifact has, so nothing matches.
      return str(artifacts[0]['metadata'].get(match['field'], '')) if artifacts else ''
    filled = _INPUT_METADATA.sub(value, text)
    if '{{$' in filled:
      raise ReplayError(f'task {name}: query placeholder in {text!r} is not supported')
    return filled

  # --- the records of earlier replays ---------------------------------------------------------

  def _cached(self, name: str, key: str) -> Optional[Dict[str, List[dict]]]:
    for tasks in reversed(self.earlier):
      earlier = tasks.get(name)
      if earlier and earlier.get('cache_key') == key and earlier.get('status') == 'ran':
        return earlier['outputs']
    return None

  def _known_artifacts(self) -> List[dict]:
    """Every artifact earlier tasks produced, once each, oldest first (a resolver's 'latest' is
    the last; a cached task lists its earlier outputs again, which does not make them newer)."""
    known: Dict[str, dict] = {}
    for tasks in self.earlier + [self.record]:
      for task in tasks.values():
        if task.get('status') in ('ran', 'cached'):
          for artifacts in task.get('outputs', {}).values():
            for artifact in artifacts:
              known.setdefault(artifact['name'], artifact)
    return list(known.values())

  def _save_record(self) -> None:
    with open(os.path.join(self.job_dir, RECORD), 'w') as f:
      json.dump({'job': self.job_id, 'tasks': self.record}, f, indent=1, sort_keys=True)

  # --- the whole job --------------------------------------------------------------------------

  def check_local(self) -> None:
    """The replay runs on local paths (DirectRunner, no credentials): a spec compiled for a
    bucket is refused up front rather than failing in its first task."""
    remote = sorted({url for text in container.spec_strings(self.spec)
                     for url in re.findall(r'\b[a-z][a-z0-9+]*://[^\s"\',]+', text)})
    if remote:
      raise ReplayError(f'the spec names remote paths ({", ".join(remote[:3])}); compile it with a '
                        f'local --pipeline-root and --data-dir (and --serving-dir) to replay it')

  def run(self) -> List[TaskRun]:
    self.check_local()
    self.check_recipe()
    os.makedirs(self.job_dir, exist_ok=True)
    self.dockerfile.stage(self.workdir, self.context)
    tasks = self.spec['root']['dag']['tasks']
    order = topological_order(tasks)
    self.log(f'replay {self.job_id}: {len(order)} tasks under {self.job_dir}; the image\'s '
             f'{self.dockerfile.workdir} is {self.workdir}')
    runs = []
    for index, name in enumerate(order, 1):
      task = tasks[name]
      self.log(f'  [{index}/{len(order)}] {name} ...')
      kind = self._executor(task)
      try:
        if 'container' in kind:
          run = self.run_container_task(name, task)
        elif 'resolver' in kind:
          run = self.run_resolver_task(name, task)
        else:
          raise ReplayError(f'task {name}: executor kind {sorted(kind)} is not supported by the '
                            f'replay (container and resolver are)')
      except ReplayError:
        self.record[name] = {'status': 'failed'}
        self._save_record()
        raise
      self.record[name] = {**self.record.get(name, {}), 'status': run.status,
                           'outputs': run.outputs}
      self._save_record()
      self.log(f'      {run.status} ({run.seconds:.1f} s)')
      runs.append(run)
    return runs


def _without_type(artifact: dict) -> dict:
  return {k: v for k, v in artifact.items() if k != 'type'}


def _read_json(path: str) -> dict:
  if not os.path.exists(path):
    return {}
  with open(path) as f:
    return json.load(f)


def _cache_key(component: dict, container_spec: dict, parameters: dict, artifacts: dict,
               driver_parameters: dict) -> str:
  inputs = {k: [(a['name'], a['uri']) for a in v['artifacts']] for k, v in artifacts.items()}
  key = {'component': component, 'container': {k: v for k, v in container_spec.items()
                                               if k != 'lifecycle'},
         'parameters': parameters, 'driver': driver_parameters, 'inputs': inputs}
  return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()


def _merge_outputs(assigned: Dict[str, dict], executor_output: dict) -> Dict[str, List[dict]]:
  """The launcher's view after a task: each assigned output with what the executor reported
  (metadata such as split_names, blessed, current_model_id)."""
  reported = executor_output.get('artifacts', {})
  outputs = {}
  for key, value in assigned.items():
    merged = []
    for index, artifact in enumerate(value['artifacts']):
      update = (reported.get(key, {}).get('artifacts') or [{}] * (index + 1))[index]
      merged.append({**artifact, 'uri': update.get('uri', artifact['uri']),
                     'metadata': {**artifact.get('metadata', {}), **update.get('metadata', {})}})
    outputs[key] = merged
  return outputs


def _schema_title(artifact: dict) -> str:
  schema = artifact.get('type', {})
  if 'schemaTitle' in schema:
    return schema['schemaTitle']
  match = re.search(r'^title:\s*(\S+)', schema.get('instanceSchema', ''), re.M)
  return match.group(1) if match else ''


def _query(artifacts: List[dict], text: str) -> List[dict]:
  """The artifacts matching an artifact-query filter of the forms TFX compiles:
  `schema_title="tfx.Model" AND state=LIVE AND name="..." AND metadata.blessed.number_value=1`."""
  clauses = []
  for clause in text.split(' AND '):
    field, equals, value = clause.strip().partition('=')
    if not equals:
      raise ReplayError(f'artifact query clause {clause.strip()!r} (in {text!r}) is not '
                        f'supported: the replay evaluates `field=value` clauses joined by AND')
    clauses.append((field.strip(), value.strip().strip('"')))

  def matches(artifact: dict) -> bool:
    for field, value in clauses:
      if field == 'schema_title':
        ok = _schema_title(artifact) == value
      elif field == 'state':
        ok = value == 'LIVE'  # replayed artifacts are never deleted
      elif field == 'name':
        ok = artifact.get('name') == value
      elif field.startswith('metadata.'):
        _, key, kind = field.split('.')
        actual = artifact.get('metadata', {}).get(key)
        ok = actual is not None and (float(actual) == float(value) if kind == 'number_value'
                                     else str(actual) == value)
      else:
        raise ReplayError(f'artifact query field {field!r} (in {text!r}) is not supported')
      if not ok:
        return False
    return True

  return [a for a in artifacts if matches(a)]
