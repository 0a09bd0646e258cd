# Store client library and the Mooncake C API on top of it.
list(APPEND DANGO_STORE_SOURCES
  store_client.c
  store_client_config.c
  store_client_copy.c
  store_client_events.c
  store_client_get.c
  store_client_put.c
  store_records.c
  store_mooncake.c
  store_client_ha.c
  store_client_loc.c
  store_client_slot.c
  store_disk.c
  store_client_disk.c)
