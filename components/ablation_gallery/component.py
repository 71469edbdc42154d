"""AblationGallery: a Python-function component writing ablation.{md,json} and gallery.png.

No `from __future__ import annotations` here: the @component parser reads real annotations.
"""

from tfx import v1 as tfx
from tfx.types import artifact
from tfx.utils import path_utils

from components.ablation_gallery import report


class ColorizationReport(artifact.Artifact):
  """Folder with ablation.md, ablation.json and gallery.png."""
  # The KFP V2 compiler wants the type name as '<namespace>.<Name>' and the container entrypoint
  # imports the class by that name: `components` exports it (components/__init__.py).
  TYPE_NAME = 'components.ColorizationReport'


@tfx.dsl.components.component
def AblationGallery(
    examples: tfx.dsl.components.InputArtifact[tfx.types.standard_artifacts.Examples],
    full_model: tfx.dsl.components.InputArtifact[tfx.types.standard_artifacts.Model],
    fusion_model: tfx.dsl.components.InputArtifact[tfx.types.standard_artifacts.Model],
    report_dir: tfx.dsl.components.OutputArtifact[ColorizationReport],
    color_space: tfx.dsl.components.Parameter[str] = 'lab',
    split: tfx.dsl.components.Parameter[str] = 'val',
    gallery_images: tfx.dsl.components.Parameter[int] = 8,
) -> None:
  """Gray baseline, full-image net alone and fusion net on the same eval images."""
  table = report.write_report(
      examples.uri, path_utils.serving_model_path(full_model.uri),
      path_utils.serving_model_path(fusion_model.uri), report_dir.uri, color_space, split,
      gallery_images)
  for variant, row in table.items():
    report_dir.set_float_custom_property(f"{variant.replace(' ', '_')}_psnr", row['PSNR'])
