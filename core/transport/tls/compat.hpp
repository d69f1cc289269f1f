// Every use of mbedTLS internals, in one place. mbedTLS 2.28 (Debian 12) has no public
// API for these; each is checked at compile time against the version and build options
// it was written for, so an upgrade fails to build here instead of misbehaving.
#pragma once

#include <mbedtls/ctr_drbg.h>
#include <mbedtls/ssl.h>
#include <mbedtls/ssl_ticket.h>

namespace mqgate::tls_compat {

// Ticket key rotation draws randomness later, from whichever thread issues a ticket:
// points it at a generator of the caller's choosing (mbedtls_ssl_ticket_setup() has no
// way to name a different one for later).
void set_ticket_rng(mbedtls_ssl_ticket_context& ticket, mbedtls_ctr_drbg_context& drbg);

// Sets when ticket key `index` (0 or 1) was made, for keys restored from a file, so
// mbedTLS rotates them on their age rather than the process's.
void set_ticket_key_time(mbedtls_ssl_ticket_context& ticket, int index, uint32_t seconds);

// Whether the session has no record bytes buffered in either direction (so its record
// buffers' content is dead).
bool records_idle(const mbedtls_ssl_context& ssl);

// Gives the pages of both record buffers back to the kernel (they read as zeros when
// touched again). Only when records_idle().
void release_record_pages(mbedtls_ssl_context& ssl);

// During a handshake (between steps): whether the client is resuming a session
// (ticket or session id), i.e. an abbreviated handshake. Every resumed handshake on the
// server waits for the client's Finished after sending its own, so a step returning
// WANT_READ sees it.
bool handshake_resuming(const mbedtls_ssl_context& ssl);

}  // namespace mqgate::tls_compat
