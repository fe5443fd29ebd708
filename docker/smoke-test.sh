#!/usr/bin/env bash
# Build the shipped Dockerfile for real and run the image: --version, then a tiny train + impute on the
# example data. For build machines with no image registry and no route to the PyTorch wheel index:
#  * the base image is a Debian bookworm root made with debootstrap (with python3 and venv), imported
#    into a Docker engine started here and stopped at the end;
#  * Python packages come from wheels downloaded on the host (pip's own configuration) into a temporary
#    build context, whose copy of the Dockerfile gets two extra lines in the build stage
#    (COPY wheels, PIP_NO_INDEX/PIP_FIND_LINKS). The shipped Dockerfile is not changed.
# Needs root and Debian's docker.io and debootstrap (installed if missing).  Usage: docker/smoke-test.sh
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
scratch=$(mktemp -d /tmp/spinimpute-docker.XXXXXX)
image=spinimpute:smoke
dockerd_pid=
cleanup() {
  if [ -n "$dockerd_pid" ]; then kill "$dockerd_pid" 2>/dev/null || true; wait "$dockerd_pid" 2>/dev/null || true; fi
  rm -rf "$scratch" 2>/dev/null || true
}
trap cleanup EXIT

if ! command -v dockerd >/dev/null || ! command -v debootstrap >/dev/null; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker.io debootstrap >/dev/null
fi
# The mirror apt uses (deb822 'URIs:' or one-line 'deb URL' sources).
mirror=$(cat /etc/apt/sources.list.d/*.sources /etc/apt/sources.list 2>/dev/null \
  | sed -nE 's/^(URIs:|deb) +(https?:[^ ]+).*/\2/p' | head -n 1 || true)
mirror=${mirror:-http://deb.debian.org/debian}
echo "mirror: $mirror"

echo "== starting dockerd"
dockerd --storage-driver=overlay2 --iptables=false --bridge=none --data-root="$scratch/docker" \
  --host="unix://$scratch/docker.sock" >"$scratch/dockerd.log" 2>&1 &
dockerd_pid=$!
export DOCKER_HOST="unix://$scratch/docker.sock"
for _ in $(seq 60); do docker info >/dev/null 2>&1 && break; sleep 1; done
docker info >/dev/null

echo "== base image (debootstrap bookworm + python3)"
debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates bookworm "$scratch/rootfs" "$mirror" \
  >"$scratch/debootstrap.log" 2>&1
tar -C "$scratch/rootfs" -c . | docker import - local/python:bookworm >/dev/null

echo "== build context with host-downloaded wheels"
context="$scratch/context"
mkdir -p "$context"
cp -r "$repo/pyproject.toml" "$repo/README.md" "$repo/spinimpute" "$context/"
pip download -q -d "$context/wheels" --python-version 3.11 --only-binary=:all: \
  -c "$repo/constraints-cpu.txt" torch==2.13.0 "$repo" setuptools wheel >/dev/null 2>&1
rm -f "$context"/wheels/spinimpute-*
sed '/^FROM \${BASE} AS build$/a COPY wheels /wheels\nENV PIP_NO_INDEX=1 PIP_FIND_LINKS=/wheels' \
  "$repo/Dockerfile" >"$context/Dockerfile"

echo "== docker build"
start=$(date +%s)
docker build -q --network host --build-arg BASE=local/python:bookworm -t "$image" "$context" >/dev/null
echo "built $image in $(( $(date +%s) - start )) s; size $(docker image inspect -f '{{.Size}}' "$image" | awk '{printf "%.0f MB", $1/1e6}')"
echo "labels: $(docker image inspect -f '{{json .Config.Labels}}' "$image")"
echo "user: $(docker image inspect -f '{{.Config.User}}' "$image"), entrypoint: $(docker image inspect -f '{{json .Config.Entrypoint}}' "$image")"

echo "== docker run $image --version"
docker run --rm --network none "$image" --version

echo "== docker run: tiny train + impute on data/example"
work="$scratch/work"
mkdir -p "$work" && cp "$repo"/data/example/*.vcf.gz "$work/" && chmod -R a+rwX "$work"
docker run --rm --network none -v "$work:/data" "$image" -q train --ref ref.vcf.gz --out model.spin
docker run --rm --network none -v "$work:/data" "$image" -q impute --target target.vcf.gz --model model.spin \
  --out imputed.vcf.gz
docker run --rm --network none -v "$work:/data" "$image" evaluate --truth truth.vcf.gz --imputed imputed.vcf.gz \
  --ref ref.vcf.gz | tail -n 2
ls "$work/imputed.vcf.gz" "$work/imputed.vcf.gz.tbi" >/dev/null
echo "== docker smoke test passed"
