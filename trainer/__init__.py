"""instcolor's model code: colour maths, features, preprocessing_fn, nets, run_fns, serving.

Importing any part of the project runs this first (`pipeline`, `components` and `tools` import it),
so it is the one place that sets the process up for the TFX 1.16 stack, before TensorFlow loads:
in the CLI, the tests, the benches, Beam workers and the Kubeflow container's executors alike.
"""
import os
import warnings

# tf_keras (Keras 2) end to end: TFMA 0.47 and TFT 1.16 are built for it. Must precede TF imports.
os.environ.setdefault('TF_USE_LEGACY_KERAS', '1')
# google-cloud packages warn about Python 3.10 at import, here and in every Beam worker process.
os.environ.setdefault('PYTHONWARNINGS', 'ignore::FutureWarning')
warnings.filterwarnings('ignore', category=FutureWarning)
# TensorFlow's C++ INFO/WARNING lines (no GPU, cost-model notes) drown the progress output.
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
