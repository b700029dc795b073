# Tests of the gateway's policy modules (gateway/policy.cmake).
gs_add_test(NAME test_auth SOURCES ${CMAKE_CURRENT_LIST_DIR}/test_auth.c LIBS gs_gateway_policy
            TIMEOUT 60)
gs_add_test(NAME test_ratelimit SOURCES ${CMAKE_CURRENT_LIST_DIR}/test_ratelimit.c
            LIBS gs_gateway_policy TIMEOUT 60)
gs_add_test(NAME test_metrics SOURCES ${CMAKE_CURRENT_LIST_DIR}/test_metrics.c
            LIBS gs_gateway_policy TIMEOUT 60)
