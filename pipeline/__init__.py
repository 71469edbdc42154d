"""The instcolor pipeline definition: configs (presets, paths) and create_pipeline."""
import trainer  # noqa: F401  (sets the process up for the TFX stack before TensorFlow loads)
