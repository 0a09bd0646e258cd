# Empty dependencies file for dango_common.
# This may be replaced when dependencies are built.
