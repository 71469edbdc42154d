"""Custom ExampleGen for PASCAL VOC folders (component, Beam executor, fingerprinting driver)."""
