"""Custom TFX components of instcolor, one folder each (component, executor, helpers)."""
import trainer  # noqa: F401  (sets the process up for the TFX stack before TensorFlow loads)


def __getattr__(name: str):
  # Custom artifact types by their TYPE_NAME ('components.<Name>'), which is how Kubeflow V2's
  # container entrypoint imports them; lazily, so importing `components` stays light.
  if name == 'ColorizationReport':
    from components.ablation_gallery.component import ColorizationReport
    return ColorizationReport
  raise AttributeError(f'module {__name__!r} has no attribute {name!r}')
