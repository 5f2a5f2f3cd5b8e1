#!/usr/bin/env bash
# Build the Dockerfile into $IMAGE with BuildKit (`make image`); prints the build time and the image size.
#
# Settings (environment): IMAGE (default harmguard:dev); TORCH (cpu or cuda; default cpu, the small test image);
# PYTHON_IMAGE (the base; default: what scripts/image_base.sh chooses); the host's pip settings, when set:
#   PIP_INDEX_URL   -> build secret pip_index_url (it may carry credentials)
#   PIP_CERT        -> build secret pip_cert (the CA bundle of a TLS proxy)
#   PIP_FIND_LINKS  -> local folders: imported as an image (harmguard-wheels:<key>, keyed by the files' names, sizes
#                      and times) that the Dockerfile bind-mounts as its `wheels` stage; URLs: build secret
#                      pip_find_links
# None of them is written into a layer or the image's history (secrets and mounts are not).
set -euo pipefail
cd "$(dirname "$0")/.."

IMAGE="${IMAGE:-harmguard:dev}"
TORCH="${TORCH:-cpu}"
started=$(date +%s)

# A client that builds with BuildKit: buildx when installed; else a client older than 23 (Debian's docker.io), whose
# `docker build` uses the engine's BuildKit with DOCKER_BUILDKIT=1. Newer clients without buildx cannot.
builder=()
for client in $(type -ap docker | awk '!seen[$0]++'); do
  if "$client" buildx version >/dev/null 2>&1; then
    builder=("$client" buildx build --load)
    break
  fi
  major="$("$client" --version | sed -nE 's/^Docker version ([0-9]+)\..*/\1/p')"
  if [[ "$major" =~ ^[0-9]+$ ]] && [ "$major" -lt 23 ]; then
    builder=(env DOCKER_BUILDKIT=1 "$client" build)
    break
  fi
done
if [ ${#builder[@]} = 0 ]; then
  echo "build_image.sh: no docker client here builds with BuildKit: install docker-buildx (or Debian's docker.io)" >&2
  exit 1
fi

base="$(scripts/image_base.sh)"
commit="$(git rev-parse HEAD 2>/dev/null || echo unknown)"
if [ "$commit" != unknown ] && [ -n "$(git status --porcelain --untracked-files=no 2>/dev/null)" ]; then
  commit="$commit+dirty"  # as harmguard.lineage.git_commit writes it
fi
args=(--progress=plain --tag "$IMAGE" --build-arg "PYTHON_IMAGE=$base" --build-arg "TORCH=$TORCH"
      --build-arg "GIT_COMMIT=$commit")

secrets="$(mktemp -d)"
trap 'rm -rf "$secrets"' EXIT
if [ -n "${PIP_INDEX_URL:-}" ]; then
  printf '%s' "$PIP_INDEX_URL" >"$secrets/pip_index_url"
  args+=(--secret "id=pip_index_url,src=$secrets/pip_index_url")
fi
if [ -n "${PIP_CERT:-}" ]; then
  [ -r "$PIP_CERT" ] || { echo "build_image.sh: PIP_CERT=$PIP_CERT is not a readable file" >&2; exit 1; }
  args+=(--secret "id=pip_cert,src=$PIP_CERT")
fi
folders=() urls=()
for link in ${PIP_FIND_LINKS:-}; do
  link="${link#file://}"
  if [ -d "$link" ]; then folders+=("$link"); else urls+=("$link"); fi
done
if [ ${#urls[@]} -gt 0 ]; then
  printf '%s' "${urls[*]}" >"$secrets/pip_find_links"
  args+=(--secret "id=pip_find_links,src=$secrets/pip_find_links")
fi
if [ ${#folders[@]} -gt 0 ]; then
  # pip reads a find-links folder flat: its files, not its subfolders.
  mapfile -t files < <(find "${folders[@]}" -maxdepth 1 -type f \( -name '*.whl' -o -name '*.tar.gz' -o -name '*.zip' \) | sort)
  key="$(for f in "${files[@]}"; do stat -c '%n %s %Y' "$f"; done | sha256sum | cut -c1-12)"
  wheels="harmguard-wheels:$key"
  if ! docker image inspect "$wheels" >/dev/null 2>&1; then
    echo "build_image.sh: importing ${#files[@]} files of PIP_FIND_LINKS (${folders[*]}) as $wheels" >&2
    mkdir "$secrets/wheels"
    ln -s "${files[@]}" "$secrets/wheels/"
    tar -C "$secrets/wheels" --dereference -cf - . | docker import --message "PIP_FIND_LINKS ${folders[*]}" - "$wheels" >/dev/null
    # Older imports of a changed folder are ours to drop (the build cache keeps what it still uses).
    docker image ls --format '{{.Repository}}:{{.Tag}}' harmguard-wheels | grep -vxF "$wheels" | xargs -r docker image rm >/dev/null || true
  fi
  args+=(--build-arg "WHEELS=$wheels")
fi

echo "build_image.sh: ${builder[*]} ${args[*]} . (base $base, TORCH=$TORCH)" >&2
"${builder[@]}" "${args[@]}" .
size="$(docker image inspect --format '{{.Size}}' "$IMAGE")"
echo "build_image.sh: built $IMAGE (base $base, TORCH=$TORCH) in $(( $(date +%s) - started )) s; size $(( size / 1000000 )) MB" >&2
