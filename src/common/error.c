/*
 * The error space: dango_strerror(), dango_err_name() and the predicates are
 * generated from DANGO_ERRNO_MAP in <dango/error.h>, so the three can never
 * disagree. No function here allocates or uses a static scratch buffer.
 */
#include <limits.h>
#include <stdio.h>
#include <string.h>

#include <dango/error.h>

const char *dango_strerror(int err)
{
    switch (err) {
    case 0:
        return "success";
#define DANGO__ERR_MSG(_name, _val, _msg)                                      \
    case DANGO_##_name:                                                        \
        return _msg;
        DANGO_ERRNO_MAP(DANGO__ERR_MSG)
#undef DANGO__ERR_MSG
    default:
        return "unknown error";
    }
}

const char *dango_err_name(int err)
{
    switch (err) {
    case 0:
        return "DANGO_OK";
#define DANGO__ERR_NAME(_name, _val, _msg)                                     \
    case DANGO_##_name:                                                        \
        return "DANGO_" #_name;
        DANGO_ERRNO_MAP(DANGO__ERR_NAME)
#undef DANGO__ERR_NAME
    default:
        return "DANGO_UNKNOWN";
    }
}

char *dango_strerror_r(int err, char *buf, size_t len)
{
    if ((buf != NULL) && (len > 0)) {
        snprintf(buf, len, "%s (%d)", dango_strerror(err), err);
    }

    return buf;
}

int dango_err_from_errno(int errnum)
{
    if (errnum == INT_MIN) {
        return DANGO_EINVAL; /* not an errno; -INT_MIN would overflow */
    }

    if (errnum < 0) {
        errnum = -errnum;
    }

    if (errnum == 0) {
        return DANGO_EIO;
    }

    if (errnum == EWOULDBLOCK) {
        return DANGO_EAGAIN;
    }

    return -errnum;
}

int dango_err_is_link(int err)
{
    return (err <= -10100) && (err >= -10199);
}

int dango_err_is_peer(int err)
{
    return (err <= -10200) && (err >= -10299);
}
