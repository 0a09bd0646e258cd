/**
 * @file dango.h
 * @brief Umbrella header: everything a Dango user may call.
 */
#ifndef DANGO_H
#define DANGO_H

#include <dango/common.h>
#include <dango/conductor.h>
#include <dango/config.h>
#include <dango/error.h>
#include <dango/log.h>
#include <dango/metadata.h>
#include <dango/transport.h>
#include <dango/xfer.h>

#endif /* DANGO_H */
