# Cross-compiling for aarch64 Linux with Debian's g++-aarch64-linux-gnu:
#   cmake -S . -B build-arm64 -DCMAKE_TOOLCHAIN_FILE=cmake/aarch64-toolchain.cmake \
#         -DMAPDIRECT_WITH_URING=OFF -DBoost_INCLUDE_DIR=/usr/include
# Boost is header-only here and its headers are architecture-independent, so
# the host's may be named explicitly. With qemu-user installed, ctest runs the
# test binaries through qemu-aarch64 (static linking avoids needing a sysroot
# at run time).
set(CMAKE_SYSTEM_NAME Linux)
set(CMAKE_SYSTEM_PROCESSOR aarch64)

set(MAPDIRECT_CROSS_TRIPLE aarch64-linux-gnu CACHE STRING "GNU triple of the aarch64 cross tools")
set(CMAKE_C_COMPILER ${MAPDIRECT_CROSS_TRIPLE}-gcc)
set(CMAKE_CXX_COMPILER ${MAPDIRECT_CROSS_TRIPLE}-g++)
set(CMAKE_EXE_LINKER_FLAGS_INIT "-static")

set(CMAKE_FIND_ROOT_PATH /usr/${MAPDIRECT_CROSS_TRIPLE})
set(CMAKE_FIND_ROOT_PATH_MODE_PROGRAM NEVER)
set(CMAKE_FIND_ROOT_PATH_MODE_LIBRARY ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_INCLUDE BOTH)
set(CMAKE_FIND_ROOT_PATH_MODE_PACKAGE ONLY)

find_program(MAPDIRECT_QEMU_AARCH64 NAMES qemu-aarch64 qemu-aarch64-static)
if(MAPDIRECT_QEMU_AARCH64)
  set(CMAKE_CROSSCOMPILING_EMULATOR ${MAPDIRECT_QEMU_AARCH64})
endif()
