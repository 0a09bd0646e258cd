file(REMOVE_RECURSE
  "CMakeFiles/dango.dir/src/dango.c.o"
  "CMakeFiles/dango.dir/src/dango.c.o.d"
  "libdango.pdb"
  "libdango.so"
  "libdango.so.0"
  "libdango.so.0.1.0"
)

# Per-language clean rules from dependency scanning.
foreach(lang C)
  include(CMakeFiles/dango.dir/cmake_clean_${lang}.cmake OPTIONAL)
endforeach()
