# gateway/ws.cmake: GET /v1/ws, the WebSocket route (routes_ws.c, always
# built) and its RFC 6455 layer (ws.c, built only when libwslay is found:
# GS_HAVE_WSLAY; without it the route answers 501). Debian's libwslay-dev
# ships no pkg-config file, so the header and library are also looked up
# directly; the aarch64 cross build has no libwslay:arm64 and goes without.
target_sources(gs_gateway PRIVATE ${CMAKE_CURRENT_LIST_DIR}/routes_ws.c)

pkg_check_modules(WSLAY IMPORTED_TARGET libwslay)
if(WSLAY_FOUND)
  set(GS_WSLAY_TARGET PkgConfig::WSLAY)
else()
  find_path(GS_WSLAY_INCLUDE_DIR NAMES wslay/wslay.h DOC "Folder with wslay/wslay.h")
  find_library(GS_WSLAY_LIBRARY NAMES wslay DOC "libwslay")
  if(GS_WSLAY_INCLUDE_DIR AND GS_WSLAY_LIBRARY)
    add_library(gs_wslay INTERFACE)
    target_include_directories(gs_wslay SYSTEM INTERFACE ${GS_WSLAY_INCLUDE_DIR})
    target_link_libraries(gs_wslay INTERFACE ${GS_WSLAY_LIBRARY})
    set(GS_WSLAY_TARGET gs_wslay)
  endif()
endif()

if(GS_WSLAY_TARGET)
  set(GS_HAVE_WSLAY ON CACHE INTERNAL "libwslay found: gateway/ws.c is built")
  target_sources(gs_gateway PRIVATE ${CMAKE_CURRENT_LIST_DIR}/ws.c ${CMAKE_CURRENT_LIST_DIR}/ws.h)
  target_compile_definitions(gs_gateway PUBLIC GS_HAVE_WSLAY=1)
  target_link_libraries(gs_gateway PUBLIC ${GS_WSLAY_TARGET} PkgConfig::OPENSSL)
  message(STATUS "WebSocket (/v1/ws): on (libwslay)")
else()
  set(GS_HAVE_WSLAY OFF CACHE INTERNAL "libwslay found: gateway/ws.c is built")
  message(STATUS "WebSocket (/v1/ws): off (libwslay not found; the route answers 501)")
endif()
