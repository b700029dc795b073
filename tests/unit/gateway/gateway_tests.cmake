# Tests of the gateway's pure modules (config, dispatch policy, think split).
gs_add_test(NAME test_config SOURCES ${CMAKE_CURRENT_LIST_DIR}/test_config.c LIBS gs_gateway
            TIMEOUT 60)
gs_add_test(NAME test_dispatch_policy SOURCES ${CMAKE_CURRENT_LIST_DIR}/test_dispatch_policy.c
            LIBS gs_gateway TIMEOUT 60)
gs_add_test(NAME test_think_split SOURCES ${CMAKE_CURRENT_LIST_DIR}/test_think_split.c
            LIBS gs_gateway TIMEOUT 60)
gs_add_test(NAME test_sdnotify SOURCES ${CMAKE_CURRENT_LIST_DIR}/test_sdnotify.c
            ${PROJECT_SOURCE_DIR}/gateway/sdnotify.c LIBS gs_common TIMEOUT 60)
gs_add_test(NAME test_json_lift SOURCES ${CMAKE_CURRENT_LIST_DIR}/test_json_lift.c
            LIBS gs_gateway TIMEOUT 60)
