# Installs Debian 12 packages idempotently: only missing ones, apt-get update
# only when something is missing. Sourced by run-example.sh and run-tests.sh.
mapdirect_install() {
  local missing=()
  local pkg
  for pkg in "$@"; do
    if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed"; then
      missing+=("$pkg")
    fi
  done
  if [ "${#missing[@]}" -eq 0 ]; then
    return 0
  fi
  echo "Installing Debian packages: ${missing[*]}"
  local sudo=""
  if [ "$(id -u)" -ne 0 ]; then
    sudo="sudo"
  fi
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq -o DPkg::Lock::Timeout=600 --no-install-recommends "${missing[@]}"
}

# What building the library and its examples needs.
MAPDIRECT_BUILD_PACKAGES=(g++ cmake make pkg-config libboost-dev liburing-dev)
# What the whole test suite needs on top: Catch2, the PMDK peer, benchmarks,
# loop-mounted xfs/ext4, the QEMU pmem tier, the aarch64 cross check, and the
# clang build, clang-tidy and clang-format checks.
MAPDIRECT_TEST_PACKAGES=(catch2 libpmem-dev libpmem2-dev libbenchmark-dev xfsprogs e2fsprogs util-linux
  gnuplot-nox python3 file busybox-static qemu-system-x86 cpio xz-utils kmod g++-aarch64-linux-gnu qemu-user libsqlite3-dev sqlite3
  librocksdb-dev rocksdb-tools doxygen chromium clang clang-tidy clang-format)
