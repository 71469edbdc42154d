"""ExampleGen driver whose input fingerprint covers the images and annotations, not only split lists.

FileBasedDriver fingerprints the files matching each split pattern. Our patterns are the ImageSets list
files, so an edited JPEG or XML would leave the fingerprint (and therefore the cache key) unchanged.
"""
from __future__ import annotations

import os
from typing import Any, Dict

from tfx.components.example_gen import driver, utils
from tfx.orchestration import data_types
from tfx.types import standard_component_specs
from tfx.utils import io_utils

FINGERPRINTED_FOLDERS = ('JPEGImages', 'Annotations')


class VocDriver(driver.FileBasedDriver):

  def resolve_exec_properties(self, exec_properties: Dict[str, Any],
                              pipeline_info: data_types.PipelineInfo,
                              component_info: data_types.ComponentInfo) -> Dict[str, Any]:
    exec_properties = super().resolve_exec_properties(exec_properties, pipeline_info,
                                                      component_info)
    input_base = exec_properties[standard_component_specs.INPUT_BASE_KEY]
    parts = [exec_properties[utils.FINGERPRINT_PROPERTY_NAME]]
    for folder in FINGERPRINTED_FOLDERS:
      parts.append(io_utils.generate_fingerprint(folder, os.path.join(input_base, folder, '*')))
    exec_properties[utils.FINGERPRINT_PROPERTY_NAME] = '\n'.join(parts)
    return exec_properties
