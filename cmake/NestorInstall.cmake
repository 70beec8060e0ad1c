# Installs Nestor as a CMake package: `find_package(Nestor)` gives the Nestor::* library targets
# (spec, elastic and kernel dialects, passes, compiler, runtime, CPU kernels), the headers, the .td
# files (so out-of-tree dialects and passes can include Nestor's ODS), and the tools.
include(CMakePackageConfigHelpers)

set(NESTOR_INSTALL_CMAKEDIR ${CMAKE_INSTALL_LIBDIR}/cmake/Nestor)
get_property(nestor_libs GLOBAL PROPERTY NESTOR_EXPORTED_LIBS)
install(TARGETS ${nestor_libs} EXPORT NestorTargets
  LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR}
  ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR}
  RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR})

# Public API: <prefix>/include/nestor/*.h, included as "nestor/Spec.h".
install(DIRECTORY include/nestor DESTINATION ${CMAKE_INSTALL_INCLUDEDIR}
        FILES_MATCHING PATTERN "*.h")
# Dialect and pass headers keep their source-relative paths under <prefix>/include/nestor, so
# "dialects/elastic/ElasticOps.h" resolves the same way in and out of the tree.
foreach(dir dialects/elastic dialects/kernel passes lib/spec lib/codegen)
  install(DIRECTORY ${dir}/ DESTINATION ${CMAKE_INSTALL_INCLUDEDIR}/nestor/${dir}
          FILES_MATCHING PATTERN "*.h" PATTERN "*.td" PATTERN "*.proto")
  install(DIRECTORY ${PROJECT_BINARY_DIR}/${dir}/ DESTINATION ${CMAKE_INSTALL_INCLUDEDIR}/nestor/${dir}
          FILES_MATCHING PATTERN "*.h.inc" PATTERN "*.pb.h"
          PATTERN "CMakeFiles" EXCLUDE)
endforeach()

install(EXPORT NestorTargets NAMESPACE Nestor:: DESTINATION ${NESTOR_INSTALL_CMAKEDIR})
configure_package_config_file(cmake/NestorConfig.cmake.in
  ${PROJECT_BINARY_DIR}/NestorConfig.cmake INSTALL_DESTINATION ${NESTOR_INSTALL_CMAKEDIR}
  PATH_VARS CMAKE_INSTALL_INCLUDEDIR CMAKE_INSTALL_BINDIR)
write_basic_package_version_file(${PROJECT_BINARY_DIR}/NestorConfigVersion.cmake
  COMPATIBILITY SameMinorVersion)
install(FILES ${PROJECT_BINARY_DIR}/NestorConfig.cmake ${PROJECT_BINARY_DIR}/NestorConfigVersion.cmake
  DESTINATION ${NESTOR_INSTALL_CMAKEDIR})
