# CMake generated Testfile for 
# Source directory: /work/main
# Build directory: /work/main/build
# 
# This file includes the relevant testing commands required for 
# testing this directory and lists subdirectories to be tested as well.
subdirs("src/common")
subdirs("src/net")
subdirs("src/transport")
subdirs("src/metadata")
subdirs("src/xfer")
subdirs("apps")
subdirs("tests")
subdirs("bench")
