"""Custom TFX components of instcolor, one folder each (component, executor, helpers)."""
import trainer  # noqa: F401  (sets the process up for the TFX stack before TensorFlow loads)
