# Store master: metadata state, object operations, the embeddable master
# (loop, RPC, timers), its admin HTTP server and its options.
list(APPEND DANGO_STORE_SOURCES
  store_master.c
  store_master_seg.c
  store_master_obj.c
  store_master_admin.c
  store_master_config.c
  store_master_copy.c
  store_master_kv.c
  store_master_ha.c
  store_master_ghost.c
  store_master_fence.c
  store_master_slot.c
  store_master_disk.c)
