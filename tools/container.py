"""The container image as the Dockerfile describes it, checked without a container engine.

`Dockerfile.parse` reads the recipe (base image, WORKDIR, ENV, COPY, pip installs). `stage` copies
what the COPY lines copy into a local folder that stands for the image's WORKDIR (the Kubeflow
replay runs every task there). `recipe_problems` checks the recipe against a compiled spec and the
lock: the base image's TFX is the locked one, every distribution the spec's modules import is in
the image, every pin the project adds to TFX's is installed with a version the lock allows, and
every module and file the spec names exists where the image would have it.
"""
from __future__ import annotations

import ast
import dataclasses
import importlib.metadata
import os
import posixpath
import re
import shlex
import shutil
import sys
from typing import Dict, Iterable, List, Optional, Set, Tuple

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OWN_PACKAGES = ('pipeline', 'components', 'trainer', 'tools', 'pipeline_runner')
# Dotted names of our modules (and their attributes) inside a compiled spec's strings.
_OWN_DOTTED = re.compile(r'(?<![\w.])(?:%s)(?:\.\w+)+' % '|'.join(OWN_PACKAGES))
# The official image is built with tfx's `docker-image` extra, whose kfp and kfp-pipeline-spec
# (tfx's package metadata) are the `kfp` extra's: the image holds tfx[kfp]'s closure.
BASE_IMAGE_REQUIREMENT = 'tfx[kfp]'
_BASE_IMAGE = re.compile(r'(?:^|/)tfx:(?P<version>[\w.]+)$')


@dataclasses.dataclass
class Dockerfile:
  base_image: str
  workdir: str
  env: Dict[str, str]
  copies: List[Tuple[Tuple[str, ...], str]]  # (sources relative to the build context, image path)
  pip_installs: List[Tuple[Requirement, bool]]  # (requirement, installed with --no-deps)

  @classmethod
  def parse(cls, path: str) -> 'Dockerfile':
    """The instructions this project's Dockerfile uses (FROM, WORKDIR, ENV, COPY, RUN pip)."""
    with open(path) as f:
      text = re.sub(r'\\\n', ' ', f.read())  # continuation lines
    base, workdir, env, copies, installs = '', '/', {}, [], []
    for line in text.splitlines():
      line = line.strip()
      if not line or line.startswith('#'):
        continue
      instruction, _, rest = line.partition(' ')
      instruction = instruction.upper()
      if instruction == 'FROM':
        base = rest.split()[0]
      elif instruction == 'WORKDIR':
        workdir = posixpath.join(workdir, rest.strip())
      elif instruction == 'ENV':
        env.update(_env_pairs(rest))
      elif instruction == 'COPY':
        parts = [p for p in shlex.split(rest) if not p.startswith('--')]
        copies.append((tuple(parts[:-1]), posixpath.join(workdir, parts[-1])))
      elif instruction == 'RUN':
        installs.extend(_pip_installs(rest))
    return cls(base, workdir, env, copies, installs)

  @property
  def base_tfx_version(self) -> Optional[str]:
    match = _BASE_IMAGE.search(self.base_image)
    return match.group('version') if match else None

  def installed(self) -> Dict[str, Requirement]:
    return {canonicalize_name(r.name): r for r, _ in self.pip_installs}

  def source_of(self, image_path: str, context: str = REPO_ROOT) -> Optional[str]:
    """The build-context file that a COPY puts at `image_path` (the last COPY wins), or None."""
    image_path = posixpath.normpath(image_path)
    for sources, dest in reversed(self.copies):
      for source in sources:
        local = os.path.join(context, source)
        if os.path.isdir(local):
          root = dest.rstrip('/')
          if image_path == root or image_path.startswith(root + '/'):
            candidate = os.path.join(local, posixpath.relpath(image_path, root))
            if os.path.exists(candidate):
              return candidate
        elif _file_target(dest, source) == image_path and os.path.exists(local):
          return local
    return None

  def stage(self, dest: str, context: str = REPO_ROOT) -> None:
    """Copies what the COPY lines copy under WORKDIR into `dest`, which stands for WORKDIR."""
    root = self.workdir.rstrip('/')
    for sources, image_dest in self.copies:
      if not (image_dest.rstrip('/') + '/').startswith(root + '/'):
        raise ValueError(f'COPY to {image_dest}: only copies under WORKDIR {root} can be staged')
      local_dest = os.path.join(dest, posixpath.relpath(image_dest, root))
      for source in sources:
        local = os.path.join(context, source)
        if os.path.isdir(local):
          shutil.copytree(local, local_dest, dirs_exist_ok=True,
                          ignore=shutil.ignore_patterns('__pycache__', '*.pyc'))
        else:
          target = os.path.join(dest, posixpath.relpath(_file_target(image_dest, source), root))
          os.makedirs(os.path.dirname(target), exist_ok=True)
          shutil.copy2(local, target)


def _file_target(dest: str, source: str) -> str:
  """Where `COPY source dest` puts a file: inside dest when it ends with '/', else at dest."""
  return posixpath.normpath(posixpath.join(dest, os.path.basename(source)) if dest.endswith('/')
                            else dest)


def _env_pairs(rest: str) -> Dict[str, str]:
  parts = shlex.split(rest)
  if parts and '=' not in parts[0]:  # the legacy `ENV KEY value` form
    return {parts[0]: ' '.join(parts[1:])}
  return dict(p.split('=', 1) for p in parts)


def _pip_installs(command: str) -> List[Tuple[Requirement, bool]]:
  installs = []
  for part in command.split('&&'):
    words = shlex.split(part)
    if 'pip' not in words or 'install' not in words:
      continue
    args = words[words.index('install') + 1:]
    no_deps = '--no-deps' in args
    skip_next = False
    for arg in args:
      if skip_next:
        skip_next = False
      elif arg in ('-e', '--editable', '-r', '--requirement', '-c', '--constraint'):
        skip_next = True  # the project itself or a file: not a named distribution
      elif not arg.startswith('-'):
        installs.append((Requirement(arg), no_deps))
  return installs


# --- the lock -------------------------------------------------------------------------------------

def read_lock(path: str = os.path.join(REPO_ROOT, 'uv.lock')) -> Dict[str, dict]:
  """uv.lock's packages by canonical name."""
  import tomli  # in the locked stack (a build dependency of several packages)
  with open(path, 'rb') as f:
    return {canonicalize_name(p['name']): p for p in tomli.load(f)['package']}


def lock_closure(lock: Dict[str, dict], roots: Iterable[str]) -> Set[str]:
  """The distributions the requirements `roots` install (their locked dependencies, with the
  extras they name)."""
  seen: Set[str] = set()
  todo: List[Tuple[str, Tuple[str, ...]]] = []
  for root in roots:
    requirement = Requirement(root)
    todo.append((canonicalize_name(requirement.name), tuple(sorted(requirement.extras))))
  while todo:
    name, extras = todo.pop()
    if name in seen and not extras:
      continue
    seen.add(name)
    package = lock.get(name, {})
    deps = list(package.get('dependencies', []))
    for extra in extras:
      deps += package.get('optional-dependencies', {}).get(extra, [])
    todo += [(canonicalize_name(d['name']), tuple(d.get('extra', ()))) for d in deps]
  return seen


def project_requirements(path: str = os.path.join(REPO_ROOT, 'pyproject.toml')) -> List[Requirement]:
  import tomli
  with open(path, 'rb') as f:
    return [Requirement(r) for r in tomli.load(f)['project']['dependencies']]


# --- what the spec needs --------------------------------------------------------------------------

def module_file(dotted: str, context: str = REPO_ROOT) -> Optional[Tuple[str, str]]:
  """(module name, file) for a dotted module or module attribute of this project, or None."""
  parts = dotted.split('.')
  for end in range(len(parts), 0, -1):
    relative = os.path.join(context, *parts[:end])
    for candidate in (relative + '.py', os.path.join(relative, '__init__.py')):
      if os.path.isfile(candidate):
        return '.'.join(parts[:end]), candidate
  return None


def spec_strings(value) -> Iterable[str]:
  """Every string in a compiled spec (parameter values, commands, arguments)."""
  if isinstance(value, dict):
    for item in value.values():
      yield from spec_strings(item)
  elif isinstance(value, list):
    for item in value:
      yield from spec_strings(item)
  elif isinstance(value, str):
    yield value


def spec_modules(spec: dict) -> Set[str]:
  """Our dotted names (modules, classes, functions) that a compiled spec's strings mention."""
  return {name for text in spec_strings(spec) for name in _OWN_DOTTED.findall(text)}


def third_party_imports(modules: Iterable[str], context: str = REPO_ROOT) -> Dict[str, Set[str]]:
  """{top-level import name: our modules importing it}, following our own imports transitively."""
  todo = [m for m in (module_file(d, context) for d in modules) if m]
  seen: Set[str] = set()
  result: Dict[str, Set[str]] = {}
  while todo:
    name, path = todo.pop()
    if path in seen:
      continue
    seen.add(path)
    # Each parent package's __init__ runs too.
    for end in range(1, name.count('.') + 1):
      parent = module_file('.'.join(name.split('.')[:end]), context)
      if parent:
        todo.append(parent)
    with open(path) as f:
      tree = ast.parse(f.read(), path)
    for node in ast.walk(tree):
      if isinstance(node, ast.Import):
        imported = [a.name for a in node.names]
      elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
        imported = [node.module] + [f'{node.module}.{a.name}' for a in node.names]
      else:
        continue
      for dotted in imported:
        top = dotted.split('.')[0]
        if top in OWN_PACKAGES:
          own = module_file(dotted, context)
          if own:
            todo.append(own)
        elif top not in sys.stdlib_module_names and top != '__future__':
          result.setdefault(top, set()).add(name)
  return result


def recipe_problems(spec: dict, dockerfile: Dockerfile, context: str = REPO_ROOT) -> List[str]:
  """What would break the compiled spec inside the image the Dockerfile builds (empty: nothing),
  against the build context's own uv.lock and pyproject.toml."""
  lock = read_lock(os.path.join(context, 'uv.lock'))
  requirements = project_requirements(os.path.join(context, 'pyproject.toml'))
  problems = []
  tfx_version = lock['tfx']['version']
  if dockerfile.base_tfx_version != tfx_version:
    problems.append(f'base image {dockerfile.base_image} is not TFX {tfx_version} (uv.lock)')
  installed = dockerfile.installed()
  for requirement, _ in dockerfile.pip_installs:
    locked = lock.get(canonicalize_name(requirement.name), {}).get('version')
    if locked is None or not requirement.specifier.contains(locked, prereleases=True):
      problems.append(f'Dockerfile installs {requirement}, but uv.lock has '
                      f'{requirement.name} {locked}')
  # The base image holds TFX and its own dependencies; the project's additions to them (fixes of
  # TFX's pins included) must be installed on top.
  for requirement in requirements:
    name = canonicalize_name(requirement.name)
    if name != 'tfx' and name not in installed:
      problems.append(f'pyproject.toml requires {requirement}; the Dockerfile does not install '
                      f'{requirement.name}')
  in_image = lock_closure(lock, [BASE_IMAGE_REQUIREMENT]) | lock_closure(
      lock, [r.name for r, no_deps in dockerfile.pip_installs if not no_deps]) | set(installed)
  distributions = import_names()
  modules = spec_modules(spec)
  for top, importers in sorted(third_party_imports(modules, context).items()):
    names = distributions.get(top, set())
    if not names:
      problems.append(f'{", ".join(sorted(importers))} import {top}, which no installed '
                      f'distribution provides')
    elif not names & in_image:
      problems.append(f'{", ".join(sorted(importers))} import {top} ({", ".join(sorted(names))}),'
                      f' which the image does not install')
  root = dockerfile.workdir.rstrip('/')
  for dotted in sorted(modules):
    found = module_file(dotted, context)
    image_path = (posixpath.join(root, os.path.relpath(found[1], context)) if found else None)
    if not found or not dockerfile.source_of(image_path, context):
      problems.append(f'the spec names {dotted}, which is not in the image\'s {root}')
  for path in sorted(_image_paths(spec, root)):
    if not dockerfile.source_of(path, context):
      problems.append(f'the spec names {path}, which no COPY puts in the image')
  if dockerfile.env.get('TF_USE_LEGACY_KERAS') != '1':
    problems.append('the Dockerfile does not set TF_USE_LEGACY_KERAS=1 (the nets are tf_keras)')
  if root not in dockerfile.env.get('PYTHONPATH', '').split(':'):
    problems.append(f'PYTHONPATH in the image does not hold WORKDIR {root}: the spec\'s module '
                    f'paths would not import')
  return problems


def import_names() -> Dict[str, Set[str]]:
  """{top-level import name: installed distributions providing it}. Python 3.10's
  packages_distributions reads only top_level.txt, which uv-installed wheels often lack; the
  files a distribution installed say it too."""
  result: Dict[str, Set[str]] = {}
  for dist in importlib.metadata.distributions():
    declared = (dist.read_text('top_level.txt') or '').split()
    inferred = {f.parts[0].split('.')[0] for f in dist.files or ()
                if f.suffix in ('.py', '.so') and f.parts[0] != '..' and
                not f.parts[0].endswith(('.dist-info', '.data'))}
    for name in set(declared) | inferred:
      result.setdefault(name, set()).add(canonicalize_name(dist.metadata['Name']))
  return result


def _image_paths(spec: dict, root: str) -> Set[str]:
  """Paths under the image's WORKDIR named by the spec's strings."""
  pattern = re.compile(r'(?<![\w./-])' + re.escape(root) + r'/[\w./-]+')
  return {path for text in spec_strings(spec) for path in pattern.findall(text)}
