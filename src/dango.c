/*
 * libdango.so: the umbrella shared library. It holds no code of its own; the
 * module archives are linked in whole and only DANGO_API symbols are exported.
 */
