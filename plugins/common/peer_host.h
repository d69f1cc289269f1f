/*
 * peer_host.h -- which host a connection comes from, for per-host bounds.
 *
 * The broker gives a client's peer as "192.0.2.1:51000" or "[2001:db8::1]:51000"
 * (mqgate_evt_authenticate.peer_address). A bound per host counts the address without
 * the port. An IPv6 host usually has a whole /64 (one SLAAC network, privacy addresses
 * that change), so IPv6 addresses count by their /64 prefix: otherwise one host could
 * take any number of places. An IPv4-mapped IPv6 address counts as its IPv4 address.
 *
 * Header-only C99 on POSIX (inet_pton); for the plugins in this tree.
 */
#ifndef MQGATE_PEER_HOST_H
#define MQGATE_PEER_HOST_H

#include <arpa/inet.h>
#include <stdio.h>
#include <string.h>

/* At least this many bytes for peer_host_key's `out`. */
#define PEER_HOST_KEY_LEN 64

/* Writes the host key of `peer` to out (outlen >= PEER_HOST_KEY_LEN): "192.0.2.1",
 * "2001:db8:0:1::/64"; "?" for NULL or ""; text that is no address is kept (cut to fit),
 * without a ":port" suffix. */
static inline void peer_host_key(const char* peer, char* out, size_t outlen) {
  const char *b = peer, *e;
  char addr[PEER_HOST_KEY_LEN];
  unsigned char a6[16];
  size_t n;
  if (peer == NULL || *peer == '\0') {
    snprintf(out, outlen, "?");
    return;
  }
  if (peer[0] == '[' && (e = strchr(peer, ']')) != NULL) {
    b = peer + 1;
  } else {
    e = strrchr(peer, ':');
    if (e == NULL) e = peer + strlen(peer);
  }
  n = (size_t)(e - b);
  if (n >= sizeof addr) n = sizeof addr - 1;
  memcpy(addr, b, n);
  addr[n] = '\0';
  if (strchr(addr, ':') != NULL && inet_pton(AF_INET6, addr, a6) == 1) {
    static const unsigned char mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
    if (memcmp(a6, mapped, sizeof mapped) == 0)
      snprintf(out, outlen, "%u.%u.%u.%u", a6[12], a6[13], a6[14], a6[15]);
    else
      snprintf(out, outlen, "%x:%x:%x:%x::/64", (a6[0] << 8) | a6[1], (a6[2] << 8) | a6[3],
               (a6[4] << 8) | a6[5], (a6[6] << 8) | a6[7]);
    return;
  }
  snprintf(out, outlen, "%s", addr);
}

#endif /* MQGATE_PEER_HOST_H */
