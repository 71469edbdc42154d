"""The `colorize --hints` file: colour hints per photo, in user terms, checked before any photo runs.

  {"photo.jpg": {"points": [[y, x, "#aa3311"], ...],
                 "boxes": [[ymin, xmin, ymax, xmax, "red"], ...]}}

Coordinates are normalised to [0, 1] in the photo as it is shown upright (as boxes are). A colour
is "#rgb", "#rrggbb" or a CSS colour name ("red", "darkgreen"). A box with a colour is also a box
for the fusion net. Keys are paths or file names, as in the boxes file. No TensorFlow import.
"""
from __future__ import annotations

import dataclasses
import json
import numbers
from typing import Any, Dict, List, Sequence

import numpy as np
from PIL import ImageColor


class HintsError(ValueError):
  """A malformed hints file; the message names the photo and the field."""


@dataclasses.dataclass
class PhotoHints:
  points: np.ndarray  # [P, 5] float32: y, x, r, g, b (sRGB in [0, 1])
  boxes: np.ndarray  # [M, 4] float32 normalised ymin, xmin, ymax, xmax
  box_colors: np.ndarray  # [M, 3] float32 sRGB in [0, 1]

  @property
  def count(self) -> int:
    return len(self.points) + len(self.boxes)

  def rows(self) -> np.ndarray:
    """The serving signature's hints rows [P, 6]: y, x, r, g, b, present."""
    return np.concatenate([self.points, np.ones([len(self.points), 1], np.float32)], axis=1)


NO_HINTS = PhotoHints(np.zeros([0, 5], np.float32), np.zeros([0, 4], np.float32),
                      np.zeros([0, 3], np.float32))


def parse_color(value: Any, where: str) -> List[float]:
  """'#aa3311', '#a31' or a colour name -> sRGB [r, g, b] in [0, 1]."""
  if not isinstance(value, str):
    raise HintsError(f'{where}: the colour must be a string ("#aa3311" or a name like "red"), '
                     f'got {value!r}')
  try:
    rgb = ImageColor.getrgb(value.strip())
  except ValueError:
    raise HintsError(f'{where}: {value!r} is not a colour ("#rgb", "#rrggbb" or a name like '
                     '"red")') from None
  return [channel / 255.0 for channel in rgb[:3]]


def _coordinates(values: Sequence[Any], where: str, labels: Sequence[str]) -> List[float]:
  for label, value in zip(labels, values):
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
      raise HintsError(f'{where}: {label} must be a number, got {value!r}')
    if not 0.0 <= value <= 1.0:
      raise HintsError(f'{where}: {label} must be in [0, 1] (normalised), got {value}')
  return [float(v) for v in values]


def _rows(entry: Dict[str, Any], field: str, length: int, where: str) -> List[List[Any]]:
  rows = entry.get(field, [])
  if not isinstance(rows, list):
    raise HintsError(f'{where}: {field} must be a list, got {rows!r}')
  for i, row in enumerate(rows):
    if not isinstance(row, list) or len(row) != length:
      shape = '[y, x, colour]' if field == 'points' else '[ymin, xmin, ymax, xmax, colour]'
      raise HintsError(f'{where}: {field}[{i}] must be {shape}, got {row!r}')
  return rows


def parse_photo(entry: Any, photo: str) -> PhotoHints:
  """One photo's entry -> PhotoHints; HintsError naming the photo and the field otherwise."""
  if not isinstance(entry, dict):
    raise HintsError(f'{photo}: the entry must be {{"points": [...], "boxes": [...]}}, '
                     f'got {entry!r}')
  unknown = sorted(set(entry) - {'points', 'boxes'})
  if unknown:
    raise HintsError(f'{photo}: unknown fields {unknown}; an entry has "points" and "boxes"')
  points, boxes, box_colors = [], [], []
  for i, row in enumerate(_rows(entry, 'points', 3, photo)):
    where = f'{photo}: points[{i}]'
    points.append(_coordinates(row[:2], where, ('y', 'x')) + parse_color(row[2], where))
  for i, row in enumerate(_rows(entry, 'boxes', 5, photo)):
    where = f'{photo}: boxes[{i}]'
    box = _coordinates(row[:4], where, ('ymin', 'xmin', 'ymax', 'xmax'))
    if box[2] <= box[0] or box[3] <= box[1]:
      raise HintsError(f'{where}: the box must have ymin < ymax and xmin < xmax, got {box}')
    boxes.append(box)
    box_colors.append(parse_color(row[4], where))
  return PhotoHints(np.asarray(points, np.float32).reshape(-1, 5),
                    np.asarray(boxes, np.float32).reshape(-1, 4),
                    np.asarray(box_colors, np.float32).reshape(-1, 3))


def parse(raw: Any, source: str = 'hints') -> Dict[str, PhotoHints]:
  if not isinstance(raw, dict):
    raise HintsError(f'{source}: must be a JSON object {{"photo.jpg": {{"points": [...], '
                     f'"boxes": [...]}}}}')
  return {photo: parse_photo(entry, photo) for photo, entry in raw.items()}


def load(path: str) -> Dict[str, PhotoHints]:
  """The hints file at `path` (module docstring), every entry checked."""
  with open(path) as f:
    try:
      raw = json.load(f)
    except json.JSONDecodeError as e:
      raise HintsError(f'{path}: not JSON ({e})') from None
  return parse(raw, path)
