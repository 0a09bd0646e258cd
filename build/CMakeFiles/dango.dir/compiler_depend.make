# Empty compiler generated dependencies file for dango.
# This may be replaced when dependencies are built.
