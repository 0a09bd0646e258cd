file(REMOVE_RECURSE
  "libdango_common.a"
)
