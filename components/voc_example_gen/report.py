"""The ingest report of the VOC ExampleGen: every input image kept or rejected, with reasons.

Written as `ingest_report.json` next to the Split-* folders of the Examples artifact; the run summary
and the tests read it back with `read_report`.
"""
from __future__ import annotations

import collections
import json
import os
from typing import Any, Dict, Iterable

import tensorflow as tf

from components.voc_example_gen import voc

REPORT_FILE = 'ingest_report.json'


def summarize(records: Iterable[Dict[str, Any]]) -> Dict[str, Any]:
  """Folds status records into the report: totals, per split (and per source), boxes by where
  they came from, rejections by reason, notes."""
  records = sorted(records, key=lambda r: (r['split'], r['image_id']))
  per_split: Dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
  reasons = collections.Counter()
  by_source = collections.Counter({source: 0 for source in voc.BOX_SOURCES})
  per_input: Dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
  for r in records:
    groups = [per_split[r['split']]] + ([per_input[r['source']]] if r.get('source') else [])
    for counts in groups:
      counts['total'] += 1
      counts[r['status']] += 1
      counts['boxes'] += r['num_boxes']
    if r.get('box_source'):
      by_source[r['box_source']] += r['num_boxes']
    if r['status'] == voc.REJECTED:
      reasons[r['reason']] += 1
  totals = collections.Counter()
  for counts in per_split.values():
    totals.update(counts)

  def count(groups):
    return {name: {k: counts[k] for k in ('total', voc.KEPT, voc.REJECTED, 'boxes')}
            for name, counts in sorted(groups.items())}

  return {
      'total': totals['total'],
      'kept': totals[voc.KEPT],
      'rejected': totals[voc.REJECTED],
      'boxes': totals['boxes'],
      'boxes_by_source': dict(by_source),
      'splits': count(per_split),
      'sources': count(per_input),  # with several sources only
      'rejected_by_reason': dict(reasons.most_common()),
      'rejections': [{k: r[k] for k in ('split', 'image_id', 'reason', 'detail')}
                     for r in records if r['status'] == voc.REJECTED],
      'notes': [{'split': r['split'], 'image_id': r['image_id'], 'notes': r['notes']}
                for r in records if r['notes']],
  }


def format_summary(report: Dict[str, Any]) -> str:
  """A few human lines: kept/rejected per split and the rejection reasons."""
  sources = ', '.join(f'{count} from the {source}'
                      for source, count in report.get('boxes_by_source', {}).items() if count)
  lines = [f"VOC ingest: {report['kept']} kept + {report['rejected']} rejected = "
           f"{report['total']} images ({report['boxes']} boxes{': ' + sources if sources else ''})"]
  for name, counts in report['splits'].items():
    lines.append(f"  {name:>6}: {counts['kept']} kept, {counts['rejected']} rejected, "
                 f"{counts['boxes']} boxes")
  for name, counts in report.get('sources', {}).items():
    lines.append(f"  source {name}: {counts['kept']} kept, {counts['rejected']} rejected, "
                 f"{counts['boxes']} boxes")
  for rejection in report['rejections'][:20]:
    lines.append(f"  rejected {rejection['split']}/{rejection['image_id']}: "
                 f"{rejection['reason']}: {rejection['detail']}")
  if len(report['rejections']) > 20:
    lines.append(f"  ... {len(report['rejections']) - 20} more rejections in the report")
  if report['notes']:
    lines.append(f"  {len(report['notes'])} images kept with fixes (clipped/dropped boxes, "
                 'conversions): see the report')
  return '\n'.join(lines)


def read_report(examples_uri: str) -> Dict[str, Any]:
  with tf.io.gfile.GFile(os.path.join(examples_uri, REPORT_FILE)) as f:
    return json.load(f)


def write_report(examples_uri: str, summary: Dict[str, Any]) -> None:
  with tf.io.gfile.GFile(os.path.join(examples_uri, REPORT_FILE), 'w') as f:
    json.dump(summary, f, indent=2)
