/* acl_query <aclfile>: test helper. Reads lines "username<TAB>client id<TAB>identity<TAB>
 * access<TAB>topic" from stdin (username "\-" = anonymous, identity "\-" = none; access
 * read, write or subscribe) and prints "allow" or "deny" for each; access "reach" prints
 * acl_subscribe_reach's answer for the filter: "none", "some" or "all". A bad file: its
 * error on stderr, exit 1. */
#define _POSIX_C_SOURCE 200809L
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "aclfile.h"

int main(int argc, char** argv) {
  char err[ACL_ERR_LEN];
  char* line = NULL;
  size_t cap = 0;
  ssize_t n;
  aclfile* acl;
  if (argc != 2) {
    fprintf(stderr, "usage: acl_query <aclfile>\n");
    return 2;
  }
  acl = aclfile_load(argv[1], err, sizeof err);
  if (acl == NULL) {
    fprintf(stderr, "%s\n", err);
    return 1;
  }
  while ((n = getline(&line, &cap, stdin)) > 0) {
    char* f[5];
    char* save = NULL;
    const char* user;
    const char* identity;
    int i, access;
    if (line[n - 1] == '\n') line[n - 1] = '\0';
    f[0] = line;
    for (i = 1; i < 5; i++) {
      char* t = f[i - 1] ? strchr(f[i - 1], '\t') : NULL;
      if (t) *t++ = '\0';
      f[i] = t;
    }
    (void)save;
    if (f[4] == NULL) {
      fprintf(stderr, "bad query line\n");
      return 2;
    }
    user = strcmp(f[0], "\\-") ? f[0] : NULL;
    identity = strcmp(f[2], "\\-") ? f[2] : NULL;
    if (!strcmp(f[3], "reach")) {
      static const char* const names[] = {"none", "some", "all"};
      printf("%s\n", names[acl_subscribe_reach(acl, user, f[1], identity, f[4])]);
    } else {
      access = !strcmp(f[3], "read")    ? ACL_READ
               : !strcmp(f[3], "write") ? ACL_WRITE
                                        : ACL_SUBSCRIBE;
      printf("%s\n", acl_check(acl, user, f[1], identity, f[4], access) ? "allow" : "deny");
    }
    fflush(stdout);
  }
  free(line);
  aclfile_free(acl);
  return 0;
}
