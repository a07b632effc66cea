#!/usr/bin/env bash
# Builds container images locally, pulling nothing: FROM scratch images holding one program, the
# shared libraries it links (copied from this machine) and an /etc/passwd. See deploy/Dockerfile
# and docs/OPERATING.md "Deploying".
#
#   deploy/build-image.sh [--tag TAG] [--binary PATH] [--pkcs11-module PATH]...
#       the node: avsnode (uid 10001) with CA certificates; default tag avsnode:local
#   deploy/build-image.sh prometheus [--tag TAG]
#       Prometheus from this machine's /usr/bin/prometheus (Debian: apt-get install prometheus),
#       for the compose stack; default tag avsnode-prometheus:local
#
#   --tag TAG             the image tag
#   --binary PATH         an avsnode binary already built (default: cargo build --release)
#   --pkcs11-module PATH  also copy this PKCS#11 module and the libraries it links, at the same
#                         path, for a [[signer]] pkcs11 backend (repeatable). Its configuration
#                         and token store (SoftHSM: /etc/softhsm2.conf and its tokendir) are
#                         mounted at run time, not baked in.
set -euo pipefail

image=avsnode
if [ "${1:-}" = prometheus ] || [ "${1:-}" = avsnode ]; then
    image=$1
    shift
fi
tag=$image:local
[ "$image" = prometheus ] && tag=avsnode-prometheus:local
binary=
modules=()
while [ $# -gt 0 ]; do
    case "$1" in
        --tag) tag=${2:?--tag needs a value}; shift 2 ;;
        --binary) binary=${2:?--binary needs a path}; shift 2 ;;
        --pkcs11-module) modules+=("${2:?--pkcs11-module needs a path}"); shift 2 ;;
        -h|--help) sed -n '2,/^set -e/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) echo "build-image.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
done

root=$(cd "$(dirname "$0")/.." && pwd)
context=$(mktemp -d)
trap 'rm -rf "$context"' EXIT
rootfs=$context/rootfs
mkdir -p "$rootfs/etc" "$context/data"

# The dynamic loader and every library a program needs, at the paths ldd names.
copy_libraries() {
    ldd "$1" | awk '/=> \// { print $3 } /^[ \t]*\/[^ ]+ \(/ { print $1 }' | while read -r lib; do
        mkdir -p "$rootfs$(dirname "$lib")"
        cp -L "$lib" "$rootfs$lib"
    done
}
build() {
    # The classic builder where buildx is missing (it needs no frontend image from a registry).
    docker buildx version > /dev/null 2>&1 || export DOCKER_BUILDKIT=0
    docker build --quiet --tag "$tag" "$@" "$context" > /dev/null
    size=$(docker image inspect --format '{{.Size}}' "$tag")
    echo "built $tag ($((size / 1000000)) MB)"
}
printf 'hosts: files dns\n' > "$rootfs/etc/nsswitch.conf"
mkdir -m 1777 "$rootfs/tmp"

if [ "$image" = prometheus ]; then
    for program in /usr/bin/prometheus /usr/bin/promtool; do
        [ -x "$program" ] || { echo "build-image.sh: no $program (apt-get install prometheus)" >&2; exit 1; }
        mkdir -p "$rootfs/usr/bin"
        cp "$program" "$rootfs$program"
        copy_libraries "$program"
    done
    # Debian's build serves its web UI from here.
    if [ -d /usr/share/prometheus/web ]; then
        mkdir -p "$rootfs/usr/share/prometheus"
        cp -r /usr/share/prometheus/web "$rootfs/usr/share/prometheus/"
    fi
    mkdir -p "$rootfs/etc/prometheus"
    printf 'root:x:0:0:root:/root:/sbin/nologin\nnobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin\n' > "$rootfs/etc/passwd"
    printf 'root:x:0:\nnogroup:x:65534:\n' > "$rootfs/etc/group"
    cp "$root/deploy/prometheus/Dockerfile" "$context/Dockerfile"
    build --label org.opencontainers.image.title=prometheus \
        --label org.opencontainers.image.version="$(/usr/bin/prometheus --version 2>&1 | awk 'NR == 1 { print $3 }')"
    exit 0
fi

if [ -z "$binary" ]; then
    (cd "$root" && cargo build --release --locked -p avsnode --bin avsnode)
    binary=${CARGO_TARGET_DIR:-$root/target}/release/avsnode
fi
[ -x "$binary" ] || { echo "build-image.sh: $binary is not an executable" >&2; exit 1; }
for module in ${modules[@]+"${modules[@]}"}; do
    [ -f "$module" ] || { echo "build-image.sh: no PKCS#11 module at $module" >&2; exit 1; }
done

mkdir -p "$rootfs/usr/local/bin" "$rootfs/etc/avsnode" "$rootfs/etc/ssl/certs" "$rootfs/var/lib"
# The data directory, private to the node's user (the Dockerfile copies it with its owner).
mkdir -m 0700 "$context/data/avsnode"
install -m 0755 /dev/null "$rootfs/usr/local/bin/avsnode"
# Without its debug sections (symbol names stay, for backtraces).
objcopy --strip-debug "$binary" "$rootfs/usr/local/bin/avsnode"
copy_libraries "$binary"
for module in ${modules[@]+"${modules[@]}"}; do
    mkdir -p "$rootfs$(dirname "$module")"
    cp -L "$module" "$rootfs$module"
    copy_libraries "$module"
done

# Roots for HTTPS to chain RPC endpoints (rustls reads the system's store).
if [ -f /etc/ssl/certs/ca-certificates.crt ]; then
    cp /etc/ssl/certs/ca-certificates.crt "$rootfs/etc/ssl/certs/"
else
    echo "build-image.sh: warning: no /etc/ssl/certs/ca-certificates.crt (apt-get install ca-certificates): the image will trust no HTTPS server" >&2
fi
cat > "$rootfs/etc/passwd" <<'PASSWD'
root:x:0:0:root:/root:/sbin/nologin
avsnode:x:10001:10001:avsnode:/var/lib/avsnode:/sbin/nologin
nobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin
PASSWD
cat > "$rootfs/etc/group" <<'GROUP'
root:x:0:
avsnode:x:10001:
nogroup:x:65534:
GROUP
cp "$root/deploy/Dockerfile" "$context/Dockerfile"

version=$("$binary" --version | awk '{ print $2 }')
revision=$(git -C "$root" rev-parse HEAD 2>/dev/null || echo unknown)
build --label org.opencontainers.image.title=avsnode \
    --label org.opencontainers.image.version="$version" \
    --label org.opencontainers.image.revision="$revision"
