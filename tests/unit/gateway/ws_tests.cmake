# Tests of gateway/ws.c (gateway/ws.cmake): only when libwslay was found.
if(GS_HAVE_WSLAY)
  gs_add_test(NAME test_ws SOURCES ${CMAKE_CURRENT_LIST_DIR}/test_ws.c LIBS gs_gateway TIMEOUT 60)
endif()
