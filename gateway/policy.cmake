# The gateway's pure policy modules (no sockets, no libuv, `now` passed in):
# API keys (auth.c), rate limits (ratelimit.c), metrics (metrics.c).
add_library(gs_gateway_policy STATIC auth.c ratelimit.c metrics.c auth.h ratelimit.h metrics.h)
target_link_libraries(gs_gateway_policy PUBLIC gs_common PRIVATE PkgConfig::OPENSSL
                                                                  PkgConfig::JANSSON)
