#!/usr/bin/env bash
# install-deps.sh: installs what ppkit needs on a Debian (bookworm) machine, and nothing else.
# Idempotent: a package already present is not reinstalled; apt lists are refreshed only when
# something is missing. Groups: base (git, stg, checkpatch's perl, shellcheck for the pipeline
# scripts in ci/, chromium for the report screenshot test), kernel (cross compiler and linux-source-5.10 from bullseye, pinned low), qemu
# (QEMU build dependencies and source; U-Boot and mke2fs for the disk-booted board of
# `ppkit test --deploy`'s test), guest (arm64 .debs for the initramfs are fetched by ppkit
# itself), net (iproute2, iperf).
# Usage: install-deps.sh [group...]   (default: all groups)
set -euo pipefail

groups=("$@")
[ ${#groups[@]} -eq 0 ] && groups=(base kernel qemu net)

sudo_cmd=()
[ "$(id -u)" -eq 0 ] || sudo_cmd=(sudo)

base_pkgs=(git stgit msmtp make perl python3 ca-certificates xz-utils cpio procps shellcheck chromium)
kernel_pkgs=(gcc-aarch64-linux-gnu binutils-aarch64-linux-gnu bc bison flex libssl-dev libelf-dev
             ccache kmod dwarves linux-source-5.10)
qemu_pkgs=(qemu-system-arm dpkg-dev ninja-build meson pkg-config libglib2.0-dev libpixman-1-dev
           libfdt-dev zlib1g-dev libslirp-dev python3-venv python3-sphinx flex bison
           u-boot-qemu e2fsprogs)
net_pkgs=(iproute2 iperf iputils-ping ethtool tcpdump)

want=()
for g in "${groups[@]}"; do
  case "$g" in
    base) want+=("${base_pkgs[@]}") ;;
    kernel) want+=("${kernel_pkgs[@]}") ;;
    qemu) want+=("${qemu_pkgs[@]}") ;;
    net) want+=("${net_pkgs[@]}") ;;
    *) echo "install-deps: unknown group '$g' (known: base kernel qemu net)" >&2; exit 2 ;;
  esac
done

# bullseye carries linux-source-5.10 and the guest's dropbear (see harness/image.go); pin it low
# so that nothing else is ever taken from it unless asked for by name and suite.
# Never add trixie: it would silently upgrade libc and python on this machine.
ensure_bullseye() {
  local list=/etc/apt/sources.list.d/ppkit-bullseye.sources pref=/etc/apt/preferences.d/ppkit-bullseye
  local changed=0
  if [ ! -f "$list" ]; then
    printf 'Types: deb\nURIs: http://deb.debian.org/debian\nSuites: bullseye\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' |
      "${sudo_cmd[@]}" tee "$list" >/dev/null
    changed=1
  fi
  if [ ! -f "$pref" ]; then
    printf 'Package: *\nPin: release n=bullseye\nPin-Priority: 100\n' | "${sudo_cmd[@]}" tee "$pref" >/dev/null
    changed=1
  fi
  return $changed
}

# bookworm deb-src, for `apt-get source qemu`.
ensure_debsrc() {
  local list=/etc/apt/sources.list.d/ppkit-bookworm-src.sources
  [ -f "$list" ] && return 0
  printf 'Types: deb-src\nURIs: http://deb.debian.org/debian\nSuites: bookworm\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' |
    "${sudo_cmd[@]}" tee "$list" >/dev/null
  return 1
}

need_update=0
ensure_bullseye || need_update=1 # every group: the guest image is fetched whatever is installed
if printf '%s\n' "${groups[@]}" | grep -qx qemu; then ensure_debsrc || need_update=1; fi
if ! dpkg --print-foreign-architectures | grep -qx arm64; then
  "${sudo_cmd[@]}" dpkg --add-architecture arm64
  need_update=1
fi

missing=()
for p in "${want[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ] && [ $need_update -eq 0 ]; then
  echo "install-deps: all present (${groups[*]})"
  exit 0
fi
echo "install-deps: installing ${missing[*]:-(lists only)}"
export DEBIAN_FRONTEND=noninteractive
"${sudo_cmd[@]}" apt-get update -qq
if [ ${#missing[@]} -gt 0 ]; then
  "${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
echo "install-deps: done"
