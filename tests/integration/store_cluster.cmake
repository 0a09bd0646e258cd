# Store cluster tests: store_peer is the master / node / writer / client /
# copier process (fork + exec); each group of test_store_cluster is its own
# CTest entry with its own timeout.
# (dango_it_proc, the child-process helpers, is in CMakeLists.txt.)
add_executable(store_peer store_peer_helper.c)
target_link_libraries(store_peer PRIVATE dango_store Threads::Threads)
target_include_directories(store_peer PRIVATE ${CMAKE_SOURCE_DIR}/tests)

add_executable(test_store_cluster test_store_cluster.c)
target_link_libraries(test_store_cluster PRIVATE dango_store dango_it_store dango_it_proc
                      PkgConfig::CMOCKA Threads::Threads)
target_include_directories(test_store_cluster PRIVATE ${CMAKE_SOURCE_DIR}/tests)
target_compile_definitions(test_store_cluster PRIVATE
                           STORE_PEER_PATH="$<TARGET_FILE:store_peer>")
add_dependencies(test_store_cluster store_peer)

# group  timeout(s)
set(DANGO_STORE_IT_GROUPS
    roundtrip 240
    replica   120
    writer    120
    corrupt   120
    evict     180
    restart   120
    durable   120
    netns     120)
list(LENGTH DANGO_STORE_IT_GROUPS _n)
math(EXPR _last "${_n} - 1")
foreach(_i RANGE 0 ${_last} 2)
  math(EXPR _j "${_i} + 1")
  list(GET DANGO_STORE_IT_GROUPS ${_i} _group)
  list(GET DANGO_STORE_IT_GROUPS ${_j} _timeout)
  add_test(NAME integration.store.cluster.${_group}
           COMMAND test_store_cluster "${_group}_*")
  set_tests_properties(integration.store.cluster.${_group} PROPERTIES
                       TIMEOUT ${_timeout} RUN_SERIAL TRUE)
endforeach()

# Master high availability against a real etcd (test_store_ha.c).
add_executable(test_store_ha test_store_ha.c)
target_link_libraries(test_store_ha PRIVATE dango_store dango_metadata
                      dango_it_store dango_it_proc dango_test_md_servers
                      PkgConfig::CMOCKA Threads::Threads)
target_include_directories(test_store_ha PRIVATE ${CMAKE_SOURCE_DIR}/tests
                           ${CMAKE_SOURCE_DIR}/src)
target_compile_definitions(test_store_ha PRIVATE
                           STORE_PEER_PATH="$<TARGET_FILE:store_peer>")
add_dependencies(test_store_ha store_peer)
foreach(_group failover revoked bad)
  add_test(NAME integration.store.ha.${_group}
           COMMAND test_store_ha "ha_${_group}_*")
  set_tests_properties(integration.store.ha.${_group} PROPERTIES
                       TIMEOUT 120 RUN_SERIAL TRUE)
endforeach()

# Disk tier of the nodes (test_store_disk_it.c): master and nodes as store_peer
# processes, tier files in a temporary directory.
add_executable(test_store_disk_it test_store_disk_it.c)
target_link_libraries(test_store_disk_it PRIVATE dango_store dango_it_store dango_it_proc
                      PkgConfig::CMOCKA Threads::Threads)
target_include_directories(test_store_disk_it PRIVATE ${CMAKE_SOURCE_DIR}/tests
                           ${CMAKE_SOURCE_DIR}/src)
target_compile_definitions(test_store_disk_it PRIVATE
                           STORE_PEER_PATH="$<TARGET_FILE:store_peer>")
add_dependencies(test_store_disk_it store_peer)
foreach(_group offload_read_promote node_restart corrupt_record fs_full
               tiny_tier master_restart bad_config)
  add_test(NAME integration.store.disk.${_group}
           COMMAND test_store_disk_it "disk_${_group}")
  set_tests_properties(integration.store.disk.${_group} PROPERTIES
                       TIMEOUT 120 RUN_SERIAL TRUE LABELS integration)
endforeach()
