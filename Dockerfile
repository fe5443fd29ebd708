# spinimpute image. CPU by default; for CUDA build with
#   --build-arg BASE=pytorch/pytorch:2.5.1-cuda12.4-cudnn9-runtime --build-arg TORCH_SPEC=
# (the base image's torch is kept when TORCH_SPEC is empty).
ARG BASE=python:3.11-slim

FROM ${BASE} AS build
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
ARG TORCH_SPEC=torch==2.13.0
RUN python3 -m venv --system-site-packages /opt/spinimpute
ENV PATH=/opt/spinimpute/bin:$PATH
RUN if [ -n "$TORCH_SPEC" ]; then pip install --no-cache-dir --index-url "$TORCH_INDEX_URL" "$TORCH_SPEC"; fi
COPY pyproject.toml README.md /src/
COPY spinimpute /src/spinimpute
RUN pip install --no-cache-dir /src

FROM ${BASE}
ARG VERSION=0.1.0
LABEL org.opencontainers.image.title="spinimpute" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.source="https://github.com/spinimpute/spinimpute" \
      org.opencontainers.image.description="Genotype imputation with Semi-Parametric Inducing Point Networks"
COPY --from=build /opt/spinimpute /opt/spinimpute
ENV PATH=/opt/spinimpute/bin:$PATH \
    NUMBA_CACHE_DIR=/opt/numba-cache
# Compile the CPU kernels once into a cache that any user id can read and extend, so that
# no run pays the few seconds of compiling.
RUN mkdir -m 1777 /opt/numba-cache \
    && python3 -c "from spinimpute.warmup import compile_kernels; compile_kernels()" \
    && chmod -R a+rwX /opt/numba-cache
RUN useradd --create-home --uid 1000 spin
USER 1000:1000
WORKDIR /data
ENTRYPOINT ["spinimpute"]
CMD ["--help"]
