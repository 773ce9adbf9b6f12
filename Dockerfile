# One image for `valet operator`, `valet agent` and `valet sim`.
# Build: docker build -t valet:0.1.0 .
ARG PYTHON_IMAGE=python:3.11.7-slim-bookworm

# --- build: a virtual environment with pinned dependencies and valet itself -------------
FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml constraints.txt README.md ./
COPY operator ./operator
RUN python -m venv /opt/valet \
 && /opt/valet/bin/pip install -c constraints.txt . \
 && find /opt/valet -name '__pycache__' -prune -exec rm -rf {} +

# --- runtime: the environment only; no compilers, no pip cache, a numeric non-root user -
FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="valet" \
      org.opencontainers.image.description="Kubernetes operator for elastic GPU training with a healing buffer packed with spot batch inference" \
      org.opencontainers.image.version="0.1.0" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.source="https://github.com/valet-dev/valet"
COPY --from=build /opt/valet /opt/valet
ENV PATH=/opt/valet/bin:$PATH PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
USER 65532:65532
ENTRYPOINT ["valet"]
CMD ["operator"]
