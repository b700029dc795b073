# gs_add_test(NAME n SOURCES a.c... [LIBS l...] [LABELS unit|fixture...] [TIMEOUT s])
# One executable per test file, registered with ctest. GS_FIXTURES points at
# tests/fixtures in the source tree, so tests run from any build folder and
# under qemu (the cross build runs them through CMAKE_CROSSCOMPILING_EMULATOR).
function(gs_add_test)
  cmake_parse_arguments(T "" "NAME;TIMEOUT" "SOURCES;LIBS;LABELS" ${ARGN})
  if(NOT T_TIMEOUT)
    set(T_TIMEOUT 120)
  endif()
  if(NOT T_LABELS)
    set(T_LABELS unit)
  endif()
  add_executable(${T_NAME} ${T_SOURCES})
  target_include_directories(${T_NAME} PRIVATE ${PROJECT_SOURCE_DIR}/tests/unit
                                               ${PROJECT_SOURCE_DIR})
  target_compile_definitions(${T_NAME} PRIVATE
    GS_FIXTURES_DIR="${PROJECT_SOURCE_DIR}/tests/fixtures")
  target_link_libraries(${T_NAME} PRIVATE ${T_LIBS} m)
  add_test(NAME ${T_NAME} COMMAND ${T_NAME})
  set(env "GS_FIXTURES=${PROJECT_SOURCE_DIR}/tests/fixtures")
  if(GS_TEST_BLAS_THREADS)
    list(APPEND env "OPENBLAS_NUM_THREADS=${GS_TEST_BLAS_THREADS}")
  endif()
  if(CMAKE_CROSSCOMPILING)
    # Under qemu-user extra threads only cost time (spinning workers are
    # emulated too): one CPU thread for the kernels, one for OpenBLAS.
    # GS_TEST_EMULATED: tests skip what cannot run under qemu-user here
    # (creating threads can hang) or would take minutes, and say so.
    list(APPEND env "GS_CPU_THREADS=1" "OPENBLAS_NUM_THREADS=1" "GS_TEST_EMULATED=1")
  endif()
  set_tests_properties(${T_NAME} PROPERTIES
    TIMEOUT ${T_TIMEOUT}
    LABELS "${T_LABELS}"
    ENVIRONMENT "${env}")
endfunction()
