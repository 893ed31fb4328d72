# Overlay port for mapdirect, building from the checkout this port lives in:
#   vcpkg install mapdirect --overlay-ports=<repo>/ports/vcpkg
# For a registry, replace SOURCE_PATH with vcpkg_from_github(OUT_SOURCE_PATH
# SOURCE_PATH REPO <owner>/mapdirect REF "v${VERSION}" SHA512 <hash> HEAD_REF main).
get_filename_component(SOURCE_PATH "${CMAKE_CURRENT_LIST_DIR}/../../.." ABSOLUTE)
if(NOT EXISTS "${SOURCE_PATH}/include/mapdirect/mapdirect.hpp")
  message(FATAL_ERROR "mapdirect sources not found at ${SOURCE_PATH}")
endif()

# Header-only: one (release) configuration is all there is.
set(VCPKG_BUILD_TYPE release)

vcpkg_check_features(OUT_FEATURE_OPTIONS FEATURE_OPTIONS
  FEATURES
    uring MAPDIRECT_WITH_URING
)

set(PKGCONFIG_OPTIONS "")
if("uring" IN_LIST FEATURES)
  # The build finds liburing through pkg-config.
  vcpkg_find_acquire_program(PKGCONFIG)
  set(PKGCONFIG_OPTIONS "-DPKG_CONFIG_EXECUTABLE=${PKGCONFIG}")
endif()

vcpkg_cmake_configure(
  SOURCE_PATH "${SOURCE_PATH}"
  OPTIONS
    ${FEATURE_OPTIONS}
    ${PKGCONFIG_OPTIONS}
    -DMAPDIRECT_INSTALL=ON
    -DMAPDIRECT_BUILD_TESTS=OFF
    -DMAPDIRECT_BUILD_EXAMPLES=OFF
    -DMAPDIRECT_BUILD_BENCHMARKS=OFF
    -DMAPDIRECT_VM_TESTS=OFF
    # vcpkg's layout: share/<port> for the CMake package, lib/pkgconfig for .pc files.
    -DMAPDIRECT_INSTALL_CMAKEDIR=share/mapdirect
    -DMAPDIRECT_INSTALL_PKGCONFIGDIR=lib/pkgconfig
)
vcpkg_cmake_install()
vcpkg_cmake_config_fixup(CONFIG_PATH share/mapdirect)
vcpkg_fixup_pkgconfig()

file(INSTALL "${CMAKE_CURRENT_LIST_DIR}/usage" DESTINATION "${CURRENT_PACKAGES_DIR}/share/${PORT}")
vcpkg_install_copyright(FILE_LIST "${SOURCE_PATH}/LICENSE")
