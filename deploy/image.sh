#!/usr/bin/env bash
# Builds the container image localhost/troupe-node:TAG (default TAG: the crate version)
# from the release binary, with podman or docker, pulling no base image.
#
#   deploy/image.sh [TAG]
#
# The image holds only what the binary needs: the stripped binary, the shared libraries
# `ldd` names and their loader, an /etc/passwd and /etc/group for the user troupe
# (65532), and empty /data and /tmp folders. It runs as that user, works with a
# read-only root filesystem (the node writes only to /data, a volume), stops on SIGTERM
# (the node drains), and its entrypoint is `troupe-node` (default command `start`).
# The debug info stripped from the binary is kept beside the image's build folder as
# troupe-node.debug (gdb finds it through the binary's debug link).
#
# Environment: CONTAINER_ENGINE (podman or docker; the first found by default),
# CONTAINER_RUNTIME (an OCI runtime for podman, e.g. runc), TROUPE_BIN (package this
# binary instead of building one), CARGO_TARGET_DIR.
set -euo pipefail
cd "$(dirname "$0")/.."

version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)
tag="${1:-$version}"
image="localhost/troupe-node:$tag"

engine="${CONTAINER_ENGINE:-}"
if [ -z "$engine" ]; then
  for e in podman docker; do
    if command -v "$e" >/dev/null 2>&1; then engine=$e; break; fi
  done
fi
if [ -z "$engine" ]; then
  echo "image.sh: neither podman nor docker is installed (apt-get install podman, or set CONTAINER_ENGINE)" >&2
  exit 1
fi
for tool in ldd objcopy strip; do
  command -v "$tool" >/dev/null 2>&1 || { echo "image.sh: $tool is needed (apt-get install binutils libc-bin)" >&2; exit 1; }
done

target="${CARGO_TARGET_DIR:-target}"
bin="${TROUPE_BIN:-}"
if [ -z "$bin" ]; then
  echo "== building troupe-node (release)" >&2
  cargo build --release --locked -p troupe-cluster-node --bin troupe-node
  bin="$target/release/troupe-node"
fi
[ -x "$bin" ] || { echo "image.sh: no binary at $bin" >&2; exit 1; }

out="$target/image/$tag"
rm -rf "$out"
root="$out/rootfs"
mkdir -p "$root/usr/local/bin" "$root/etc" "$out/owned/data" "$out/owned/tmp"

# Debug info beside the image, the binary stripped, linked to it by name.
objcopy --only-keep-debug "$bin" "$out/troupe-node.debug"
strip --strip-debug --strip-unneeded -o "$root/usr/local/bin/troupe-node" "$bin"
objcopy --add-gnu-debuglink="$out/troupe-node.debug" "$root/usr/local/bin/troupe-node"

# The shared libraries and the loader, at the paths the binary looks for them.
ldd "$bin" | awk '$2 == "=>" && $3 ~ /^\// {print $3} $1 ~ /^\// {print $1}' | sort -u | while read -r lib; do
  mkdir -p "$root$(dirname "$lib")"
  cp -L "$lib" "$root$lib"
done

cat > "$root/etc/passwd" <<'EOF'
root:x:0:0:root:/root:/sbin/nologin
troupe:x:65532:65532:troupe:/data:/sbin/nologin
EOF
cat > "$root/etc/group" <<'EOF'
root:x:0:
troupe:x:65532:
EOF
# Names from /etc/hosts first, then DNS (glibc's own default puts DNS first).
echo "hosts: files dns" > "$root/etc/nsswitch.conf"

# FROM scratch pulls nothing; both engines build it. The node's folders get their owner
# in the image's layer (COPY --chown of a folder holding them: a COPY of an empty folder
# itself would create nothing), and a volume mounted on /data starts with that owner.
cat > "$out/Containerfile" <<EOF
FROM scratch
COPY --chown=0:0 rootfs/ /
COPY --chown=65532:65532 owned/ /
USER 65532:65532
ENV TROUPE_LISTEN=0.0.0.0:7340 TROUPE_DATA=/data HOME=/data
VOLUME /data
EXPOSE 7340
STOPSIGNAL SIGTERM
LABEL org.opencontainers.image.title="troupe-node" org.opencontainers.image.version="$version"
ENTRYPOINT ["/usr/local/bin/troupe-node"]
CMD ["start"]
EOF

echo "== building $image with $engine" >&2
args=(build --tag "$image" --file "$out/Containerfile")
if [ "$engine" = podman ] && [ -n "${CONTAINER_RUNTIME:-}" ]; then
  args=(--runtime "$CONTAINER_RUNTIME" "${args[@]}")
fi
"$engine" "${args[@]}" "$out" >&2
size=$("$engine" image inspect --format '{{.Size}}' "$image")
echo "built $image ($((size / 1024 / 1024)) MiB; debug info in $out/troupe-node.debug)" >&2
echo "$image"
