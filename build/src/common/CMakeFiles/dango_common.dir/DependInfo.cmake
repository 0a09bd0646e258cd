
# Consider dependencies only in project.
set(CMAKE_DEPENDS_IN_PROJECT_ONLY OFF)

# The set of languages for which implicit dependencies are needed:
set(CMAKE_DEPENDS_LANGUAGES
  )

# The set of dependency files which are needed:
set(CMAKE_DEPENDS_DEPENDENCY_FILES
  "/work/main/src/common/alloc.c" "src/common/CMakeFiles/dango_common.dir/alloc.c.o" "gcc" "src/common/CMakeFiles/dango_common.dir/alloc.c.o.d"
  "/work/main/src/common/config.c" "src/common/CMakeFiles/dango_common.dir/config.c.o" "gcc" "src/common/CMakeFiles/dango_common.dir/config.c.o.d"
  "/work/main/src/common/error.c" "src/common/CMakeFiles/dango_common.dir/error.c.o" "gcc" "src/common/CMakeFiles/dango_common.dir/error.c.o.d"
  "/work/main/src/common/hash.c" "src/common/CMakeFiles/dango_common.dir/hash.c.o" "gcc" "src/common/CMakeFiles/dango_common.dir/hash.c.o.d"
  "/work/main/src/common/log.c" "src/common/CMakeFiles/dango_common.dir/log.c.o" "gcc" "src/common/CMakeFiles/dango_common.dir/log.c.o.d"
  "/work/main/src/common/loop.c" "src/common/CMakeFiles/dango_common.dir/loop.c.o" "gcc" "src/common/CMakeFiles/dango_common.dir/loop.c.o.d"
  "/work/main/src/common/mpool.c" "src/common/CMakeFiles/dango_common.dir/mpool.c.o" "gcc" "src/common/CMakeFiles/dango_common.dir/mpool.c.o.d"
  "/work/main/src/common/version.c" "src/common/CMakeFiles/dango_common.dir/version.c.o" "gcc" "src/common/CMakeFiles/dango_common.dir/version.c.o.d"
  )

# Targets to which this target links.
set(CMAKE_TARGET_LINKED_INFO_FILES
  )

# Fortran module output directory.
set(CMAKE_Fortran_TARGET_MODULE_DIR "")
