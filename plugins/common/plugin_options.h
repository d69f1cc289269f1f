/*
 * plugin_options.h -- option checks the bundled plugins share.
 *
 * Header-only C99 over the plugin ABI (mqgate_plugin.h); for the plugins in this tree.
 */
#ifndef MQGATE_PLUGIN_OPTIONS_H
#define MQGATE_PLUGIN_OPTIONS_H

#include <stdio.h>
#include <string.h>

#include "mqgate_plugin.h"

/* Refuses every key of `options` that is not in `known` (a NULL-terminated list): a
 * typo should stop the broker, not be ignored. Returns MQGATE_OK, or MQGATE_ERR_CONFIG
 * with *errmsg "<file>:<line>:<column>: unknown option "<key>" (expected: a, b, c)". */
static inline int plugin_refuse_unknown_options(const mqgate_host_api *api,
                                                const mqgate_options *options,
                                                const char *const known[], char **errmsg) {
  size_t i, k;
  for (i = 0; i < api->opt_count(options); i++) {
    const char *key = api->opt_key(options, i);
    char expected[512];
    size_t used = 0;
    for (k = 0; known[k] != NULL; k++)
      if (strcmp(known[k], key) == 0) break;
    if (known[k] != NULL) continue;
    expected[0] = '\0';
    for (k = 0; known[k] != NULL && used < sizeof expected; k++) {
      int n = snprintf(expected + used, sizeof expected - used, "%s%s", k ? ", " : "", known[k]);
      if (n < 0) break;
      used += (size_t)n;
    }
    *errmsg = api->mprintf("%s: unknown option \"%s\" (expected: %s)",
                           api->opt_location(options, key), key, expected);
    return MQGATE_ERR_CONFIG;
  }
  return MQGATE_OK;
}

#endif /* MQGATE_PLUGIN_OPTIONS_H */
