"""After-run tools: the run summary, lineage and cache report from ML Metadata, and colorize."""
import trainer  # noqa: F401  (sets the process up for the TFX stack before TensorFlow loads)
