# flap_warnings(target...): the warning flags of the parts held to a warning-free build
# (coordinator/, flapctl/, common/testing/): -Wall -Wextra on the targets' own sources.
# -DFLAP_WARNINGS_AS_ERRORS=ON turns them into errors (a check, not the default: another
# compiler may warn about what this one does not).
option(FLAP_WARNINGS_AS_ERRORS "Treat warnings as errors in the warning-free parts" OFF)

function(flap_warnings)
  foreach(target IN LISTS ARGN)
    target_compile_options(${target} PRIVATE -Wall -Wextra)
    if(FLAP_WARNINGS_AS_ERRORS)
      target_compile_options(${target} PRIVATE -Werror)
    endif()
  endforeach()
endfunction()
