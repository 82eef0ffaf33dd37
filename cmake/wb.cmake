# wb_add_test(name source... [LABELS l...]): a C test executable registered with CTest.
# Exit code 77 means "skipped" (GPU tests on a machine without a GPU).
function(wb_add_test name)
  cmake_parse_arguments(T "" "" "LABELS;LIBS" ${ARGN})
  add_executable(${name} ${T_UNPARSED_ARGUMENTS})
  target_link_libraries(${name} PRIVATE wb_nn ${T_LIBS})
  add_test(NAME ${name} COMMAND ${name})
  set_tests_properties(${name} PROPERTIES SKIP_RETURN_CODE 77)
  if(T_LABELS)
    set_tests_properties(${name} PROPERTIES LABELS "${T_LABELS}")
  endif()
endfunction()
