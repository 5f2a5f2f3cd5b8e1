#!/usr/bin/env bash
# Print the base image for the Dockerfile's PYTHON_IMAGE build argument, making it when needed.
#
# 1. $PYTHON_IMAGE when set (any image the engine has or can pull);
# 2. else the Dockerfile's pinned python:3.11.14-slim-bookworm, when the engine has it or can pull it;
# 3. else (no image registry reachable: this machine, CI) a local base of the same Debian release, built by
#    debootstrap from Debian's archive with Debian's own python3.11, and imported as
#    harmguard-base:bookworm-py3.11-<key>. The key hashes this script and the archive it reads (the base's inputs);
#    the root filesystem tarball is cached in $HARMGUARD_IMAGE_CACHE (default ~/.cache/harmguard-image), so a new
#    engine only imports it (seconds) and a change of this script builds a new one. Delete the cache to take
#    Debian's newer point release.
# Progress goes to stderr; stdout is the image reference only.
set -euo pipefail
cd "$(dirname "$0")/.."

PINNED="$(sed -n 's/^ARG PYTHON_IMAGE=//p' Dockerfile)"
SUITE=bookworm
MIRROR="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
SECURITY_MIRROR="${DEBIAN_SECURITY_MIRROR:-http://deb.debian.org/debian-security}"
# What the official python image's slim variant has and the Dockerfile relies on: the interpreter, venv (ensurepip),
# TLS roots, /etc/services and /etc/protocols (netbase), time zones.
PACKAGES=python3.11,python3.11-venv,ca-certificates,netbase,tzdata
CACHE="${HARMGUARD_IMAGE_CACHE:-$HOME/.cache/harmguard-image}"

if [ -n "${PYTHON_IMAGE:-}" ]; then
  echo "$PYTHON_IMAGE"
  exit 0
fi
if docker image inspect "$PINNED" >/dev/null 2>&1 || timeout 60 docker pull --quiet "$PINNED" >/dev/null 2>&1; then
  echo "image_base.sh: using $PINNED" >&2
  echo "$PINNED"
  exit 0
fi

arch="$(dpkg --print-architecture 2>/dev/null || echo amd64)"
key="$(printf '%s\n' "$(sha256sum <"$0")" "$SUITE" "$MIRROR" "$SECURITY_MIRROR" "$PACKAGES" "$arch" | sha256sum | cut -c1-12)"
tag="harmguard-base:$SUITE-py3.11-$key"
tarball="$CACHE/$SUITE-py3.11-$key.tar.gz"
if docker image inspect "$tag" >/dev/null 2>&1; then
  echo "image_base.sh: $PINNED cannot be pulled; using the local base $tag" >&2
  echo "$tag"
  exit 0
fi

if [ ! -s "$tarball" ]; then
  echo "image_base.sh: $PINNED cannot be pulled; building a $SUITE base with debootstrap (once; cached as $tarball)" >&2
  if ! command -v debootstrap >/dev/null; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
      DEBIAN_FRONTEND=noninteractive apt-get install --yes --no-install-recommends debootstrap >&2 \
        || { apt-get update >&2 && DEBIAN_FRONTEND=noninteractive apt-get install --yes --no-install-recommends debootstrap >&2; }
    else
      echo "image_base.sh: debootstrap is not installed and cannot be installed here (needs root and apt-get)" >&2
      exit 1
    fi
  fi
  [ "$(id -u)" = 0 ] || { echo "image_base.sh: debootstrap needs root" >&2; exit 1; }
  mkdir -p "$CACHE"
  root="$(mktemp -d "$CACHE/rootfs.XXXXXX")"
  chmod 755 "$root"  # the root of the image's filesystem (and apt's _apt user reads below it)
  trap 'umount -R "$root/proc" "$root/sys" "$root/dev" 2>/dev/null || true; rm -rf "$root" "$tarball.part"' EXIT
  debootstrap --variant=minbase --arch="$arch" "$SUITE" "$root" "$MIRROR" >&2
  # The packages through apt (debootstrap's --include does not resolve every dependency: python3.11-venv's), with
  # updates and security fixes, as the official image has them.
  cat >"$root/etc/apt/sources.list" <<SOURCES
deb $MIRROR $SUITE main
deb $MIRROR $SUITE-updates main
deb $SECURITY_MIRROR $SUITE-security main
SOURCES
  # As Debian's own container images: apt keeps no package caches or translations in a layer.
  cat >"$root/etc/apt/apt.conf.d/docker-clean" <<'APT'
DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
APT::Update::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
Dir::Cache::pkgcache "";
Dir::Cache::srcpkgcache "";
APT
  echo 'Acquire::Languages "none";' >"$root/etc/apt/apt.conf.d/docker-no-languages"
  cp /etc/resolv.conf "$root/etc/resolv.conf"
  chroot "$root" /bin/sh -c "apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get -qq upgrade --yes \
    && DEBIAN_FRONTEND=noninteractive apt-get -qq install --yes --no-install-recommends ${PACKAGES//,/ }" >&2
  chroot "$root" /bin/sh -c 'apt-get clean && rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin /var/log/* /tmp/*'
  : >"$root/etc/resolv.conf"  # the engine provides it at run time
  ln -sf python3.11 "$root/usr/bin/python3"
  chroot "$root" python3 --version >&2
  tar --numeric-owner --xattrs -C "$root" -czf "$tarball.part" .
  mv "$tarball.part" "$tarball"
fi

# The official image's defaults: UTF-8 locale, an interpreter as the command.
docker import --change 'ENV LANG=C.UTF-8' --change 'CMD ["python3"]' \
  --message "debootstrap $SUITE $MIRROR + $PACKAGES" "$tarball" "$tag" >/dev/null
echo "image_base.sh: $PINNED cannot be pulled; imported the local base $tag from $tarball" >&2
echo "$tag"
