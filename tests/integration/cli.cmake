# The store's programs as a user runs them (test_store_cli.sh): dango serve
# with put/get/ls/stat/rm and the admin port, then dango-master with two
# dango-node processes.
add_test(NAME integration.store.cli
         COMMAND bash ${CMAKE_CURRENT_SOURCE_DIR}/test_store_cli.sh
                 $<TARGET_FILE:dango-cli> $<TARGET_FILE:dango-master>
                 $<TARGET_FILE:dango-node>)
set_tests_properties(integration.store.cli PROPERTIES TIMEOUT 240
                     LABELS integration)
