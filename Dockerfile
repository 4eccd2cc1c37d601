# EntroDrop Studio image: the same scripts/setup.sh and `make run` as on a developer machine.
#
#   CPU (default):  docker build -t entrodrop .
#   NVIDIA GPU:     docker build -t entrodrop --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cu128 .
#   with chromium:  docker build -t entrodrop --build-arg WITH_BROWSER=1 .   (to run `make test` inside)
#   start:          docker run --rm -p 8501:8501 entrodrop    then open http://localhost:8501
FROM python:3.11-slim-bookworm

# Plain PyPI serves the CUDA build of torch on x86-64; the CPU index keeps the image small.
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
ARG WITH_BROWSER=0

RUN apt-get update \
    && apt-get install -y --no-install-recommends make git \
    && if [ "$WITH_BROWSER" = "1" ]; then apt-get install -y --no-install-recommends chromium; fi \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /opt/entrodrop
COPY . .

# Kept at run time so that the setup stamp still matches when `make run` re-checks it.
ENV TORCH_INDEX_URL=${TORCH_INDEX_URL} \
    PIP_NO_CACHE_DIR=1 \
    PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 \
    ENTRODROP_ADDRESS=0.0.0.0 \
    PORT=8501

RUN bash scripts/setup.sh

EXPOSE 8501
CMD ["make", "run"]
