file(REMOVE_RECURSE
  "CMakeFiles/dango_common.dir/alloc.c.o"
  "CMakeFiles/dango_common.dir/alloc.c.o.d"
  "CMakeFiles/dango_common.dir/config.c.o"
  "CMakeFiles/dango_common.dir/config.c.o.d"
  "CMakeFiles/dango_common.dir/error.c.o"
  "CMakeFiles/dango_common.dir/error.c.o.d"
  "CMakeFiles/dango_common.dir/hash.c.o"
  "CMakeFiles/dango_common.dir/hash.c.o.d"
  "CMakeFiles/dango_common.dir/log.c.o"
  "CMakeFiles/dango_common.dir/log.c.o.d"
  "CMakeFiles/dango_common.dir/loop.c.o"
  "CMakeFiles/dango_common.dir/loop.c.o.d"
  "CMakeFiles/dango_common.dir/mpool.c.o"
  "CMakeFiles/dango_common.dir/mpool.c.o.d"
  "CMakeFiles/dango_common.dir/version.c.o"
  "CMakeFiles/dango_common.dir/version.c.o.d"
  "libdango_common.a"
  "libdango_common.pdb"
)

# Per-language clean rules from dependency scanning.
foreach(lang C)
  include(CMakeFiles/dango_common.dir/cmake_clean_${lang}.cmake OPTIONAL)
endforeach()
