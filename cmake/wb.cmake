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

# wb_add_module(name SOURCES... [LUA]): a research module's static library wb_<name>, linked
# into the wb program; with LUA, its lua.c defines luaopen_wb_<name> and `require "wb.<name>"`
# finds it through the generated opener table.
function(wb_add_module name)
  cmake_parse_arguments(M "LUA" "" "" ${ARGN})
  add_library(wb_${name} STATIC ${M_UNPARSED_ARGUMENTS})
  target_link_libraries(wb_${name} PUBLIC wb_nn)
  target_include_directories(wb_${name} PUBLIC ${CMAKE_CURRENT_SOURCE_DIR})
  set_property(GLOBAL APPEND PROPERTY WB_MODULE_LIBS wb_${name})
  if(M_LUA)
    target_include_directories(wb_${name} PRIVATE ${PROJECT_SOURCE_DIR}/bench)
    set_property(GLOBAL APPEND PROPERTY WB_LUA_MODULES ${name})
  endif()
endfunction()
