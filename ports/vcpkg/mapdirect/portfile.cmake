# Overlay port for mapdirect, building from the checkout this port lives in:
#   vcpkg install mapdirect[uring,tools] --overlay-ports=<repo>/ports/vcpkg
# In a registry (vcpkg's own or a private one) the sources are fetched from the
# release tag instead of this checkout; the two lines below become
#   vcpkg_from_github(OUT_SOURCE_PATH SOURCE_PATH REPO mapdirect/mapdirect
#                     REF "v${VERSION}" SHA512 <sha512 of the tag's tarball> HEAD_REF main)
# (vcpkg prints the SHA512 to use on the first install with SHA512 0).
# Features: uring -> MAPDIRECT_WITH_URING=ON, which fails the build when
# liburing >= 2.3 is not found (never a silent fallback); tools -> mapdirect-info.
get_filename_component(SOURCE_PATH "${CMAKE_CURRENT_LIST_DIR}/../../.." ABSOLUTE)
if(NOT EXISTS "${SOURCE_PATH}/include/mapdirect/mapdirect.hpp")
  message(FATAL_ERROR "mapdirect sources not found at ${SOURCE_PATH}")
endif()

# Header-only (the optional tool aside): one (release) configuration is all there is.
set(VCPKG_BUILD_TYPE release)

vcpkg_check_features(OUT_FEATURE_OPTIONS FEATURE_OPTIONS
  FEATURES
    uring MAPDIRECT_WITH_URING
    tools MAPDIRECT_INSTALL_TOOLS
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
if("tools" IN_LIST FEATURES)
  vcpkg_copy_tools(TOOL_NAMES mapdirect-info AUTO_CLEAN)
endif()
vcpkg_cmake_config_fixup(CONFIG_PATH share/mapdirect)
vcpkg_fixup_pkgconfig()

file(INSTALL "${CMAKE_CURRENT_LIST_DIR}/usage" DESTINATION "${CURRENT_PACKAGES_DIR}/share/${PORT}")
vcpkg_install_copyright(FILE_LIST "${SOURCE_PATH}/LICENSE")
