# Warning flags: every target of the project's own sources builds with -Wall -Wextra and is
# kept warning-free. flap_warnings_in(DIR) applies them to every compiled target defined in
# that folder and the project's folders below it (the generated gRPC / protobuf code of proto/
# is left out: the project does not own it). -DFLAP_WARNINGS_AS_ERRORS=ON turns them into errors
# (a check, not the default: another compiler may warn about what this one does not).
option(FLAP_WARNINGS_AS_ERRORS "Treat warnings as errors" OFF)

function(flap_warnings)
  foreach(target IN LISTS ARGN)
    target_compile_options(${target} PRIVATE -Wall -Wextra)
    if(FLAP_WARNINGS_AS_ERRORS)
      target_compile_options(${target} PRIVATE -Werror)
    endif()
  endforeach()
endfunction()

function(flap_warnings_in dir)
  get_property(targets DIRECTORY ${dir} PROPERTY BUILDSYSTEM_TARGETS)
  foreach(target IN LISTS targets)
    get_target_property(type ${target} TYPE)
    if(type MATCHES "^(STATIC_LIBRARY|SHARED_LIBRARY|MODULE_LIBRARY|OBJECT_LIBRARY|EXECUTABLE)$")
      flap_warnings(${target})
    endif()
  endforeach()
  get_property(subdirs DIRECTORY ${dir} PROPERTY SUBDIRECTORIES)
  foreach(sub IN LISTS subdirs)
    # Only the project's own folders: not proto/, not a GoogleTest built from its sources.
    string(FIND "${sub}/" "${PROJECT_SOURCE_DIR}/" at)
    if(at EQUAL 0 AND NOT sub STREQUAL "${PROJECT_SOURCE_DIR}/proto")
      flap_warnings_in(${sub})
    endif()
  endforeach()
endfunction()
