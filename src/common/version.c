/* Library version string. */
#include <dango/common.h>

#define DANGO__STR2(_x) #_x
#define DANGO__STR(_x)  DANGO__STR2(_x)

const char *dango_version_string(void)
{
    return DANGO__STR(DANGO_VERSION_MAJOR) "." DANGO__STR(
        DANGO_VERSION_MINOR) "." DANGO__STR(DANGO_VERSION_PATCH);
}
