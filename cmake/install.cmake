# Install rules (included by the top-level CMakeLists.txt when MAPDIRECT_INSTALL):
# the headers, a relocatable CMake package (mapdirectConfig.cmake, version file,
# exported targets; mapdirect::uring as an optional component in its own export
# set so consumers without liburing are unaffected) and pkg-config files.
# Everything is architecture-independent (header-only), hence DATADIR.
include(CMakePackageConfigHelpers)

set(MAPDIRECT_INSTALL_CMAKEDIR "${CMAKE_INSTALL_DATADIR}/cmake/mapdirect"
    CACHE STRING "Where mapdirectConfig.cmake is installed (relative to the prefix)")
set(MAPDIRECT_INSTALL_PKGCONFIGDIR "${CMAKE_INSTALL_DATADIR}/pkgconfig"
    CACHE STRING "Where mapdirect.pc is installed (relative to the prefix)")

install(DIRECTORY "${PROJECT_SOURCE_DIR}/include/mapdirect" DESTINATION "${CMAKE_INSTALL_INCLUDEDIR}"
        FILES_MATCHING PATTERN "*.hpp")
install(FILES "${PROJECT_SOURCE_DIR}/LICENSE" DESTINATION "${CMAKE_INSTALL_DATADIR}/doc/mapdirect")
# mapdirect-info, when it was built (OPTIONAL: a configure-then-install with
# nothing built installs the headers and package files only).
if(MAPDIRECT_INSTALL_TOOLS AND TARGET mapdirect-info)
  install(TARGETS mapdirect-info RUNTIME DESTINATION "${CMAKE_INSTALL_BINDIR}" OPTIONAL)
endif()

install(TARGETS mapdirect EXPORT mapdirectTargets)
install(EXPORT mapdirectTargets NAMESPACE mapdirect:: DESTINATION "${MAPDIRECT_INSTALL_CMAKEDIR}")
if(TARGET mapdirect_uring)
  install(TARGETS mapdirect_uring EXPORT mapdirectUringTargets)
  install(EXPORT mapdirectUringTargets NAMESPACE mapdirect:: DESTINATION "${MAPDIRECT_INSTALL_CMAKEDIR}")
endif()

# Why mapdirect::uring is absent from this install, for find_package's message.
if(TARGET mapdirect_uring)
  set(MAPDIRECT_URING_ABSENT_WHY "")
else()
  set(MAPDIRECT_URING_ABSENT_WHY "this mapdirect was installed without mapdirect::uring (MAPDIRECT_WITH_URING=${MAPDIRECT_WITH_URING}${_mapdirect_uring_why_sep}${_mapdirect_uring_why})")
endif()
configure_package_config_file("${CMAKE_CURRENT_LIST_DIR}/mapdirectConfig.cmake.in"
  "${PROJECT_BINARY_DIR}/mapdirectConfig.cmake"
  INSTALL_DESTINATION "${MAPDIRECT_INSTALL_CMAKEDIR}")
# While the major version is 0, a minor release may break the API (semver):
# only the same minor version is compatible.
if(PROJECT_VERSION_MAJOR EQUAL 0)
  set(_mapdirect_compat SameMinorVersion)
else()
  set(_mapdirect_compat SameMajorVersion)
endif()
write_basic_package_version_file("${PROJECT_BINARY_DIR}/mapdirectConfigVersion.cmake"
  VERSION ${PROJECT_VERSION} COMPATIBILITY ${_mapdirect_compat} ARCH_INDEPENDENT)
install(FILES "${PROJECT_BINARY_DIR}/mapdirectConfig.cmake" "${PROJECT_BINARY_DIR}/mapdirectConfigVersion.cmake"
        DESTINATION "${MAPDIRECT_INSTALL_CMAKEDIR}")

# pkg-config: prefix relative to the .pc file so the install tree can move.
if(IS_ABSOLUTE "${MAPDIRECT_INSTALL_PKGCONFIGDIR}" OR IS_ABSOLUTE "${CMAKE_INSTALL_INCLUDEDIR}")
  set(MAPDIRECT_PC_PREFIX "${CMAKE_INSTALL_PREFIX}")
  set(MAPDIRECT_PC_INCLUDEDIR "${CMAKE_INSTALL_FULL_INCLUDEDIR}")
else()
  file(RELATIVE_PATH _mapdirect_pc_up "/prefix/${MAPDIRECT_INSTALL_PKGCONFIGDIR}" "/prefix")
  string(REGEX REPLACE "/$" "" _mapdirect_pc_up "${_mapdirect_pc_up}")
  set(MAPDIRECT_PC_PREFIX "\${pcfiledir}/${_mapdirect_pc_up}")
  set(MAPDIRECT_PC_INCLUDEDIR "\${prefix}/${CMAKE_INSTALL_INCLUDEDIR}")
endif()
configure_file("${CMAKE_CURRENT_LIST_DIR}/mapdirect.pc.in" "${PROJECT_BINARY_DIR}/mapdirect.pc" @ONLY)
install(FILES "${PROJECT_BINARY_DIR}/mapdirect.pc" DESTINATION "${MAPDIRECT_INSTALL_PKGCONFIGDIR}")
if(TARGET mapdirect_uring)
  file(WRITE "${PROJECT_BINARY_DIR}/mapdirect-uring.pc"
       "Name: mapdirect-uring\n"
       "Description: mapdirect asynchronous persistence on io_uring\n"
       "Version: ${PROJECT_VERSION}\n"
       "Requires: mapdirect = ${PROJECT_VERSION}, liburing >= 2.3\n"
       "Libs: -pthread\n")
  install(FILES "${PROJECT_BINARY_DIR}/mapdirect-uring.pc" DESTINATION "${MAPDIRECT_INSTALL_PKGCONFIGDIR}")
endif()
