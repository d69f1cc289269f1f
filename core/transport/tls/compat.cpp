#include "transport/tls/compat.hpp"

#include <mbedtls/ssl_internal.h>  // MBEDTLS_SSL_{IN,OUT}_BUFFER_LEN
#include <mbedtls/version.h>

#include <sys/mman.h>

#include <cstdint>

// The fields used below (ticket f_rng/p_rng, in_left/out_left/in_buf/out_buf,
// handshake->resume) are
// private in mbedTLS 3 and their meaning may change in any minor release: 2.28 only.
#if MBEDTLS_VERSION_NUMBER < 0x021C0000 || MBEDTLS_VERSION_NUMBER >= 0x021D0000
#error "tls_compat.cpp uses mbedTLS 2.28 internals: review it for this mbedTLS version"
#endif
// With variable buffer lengths, mbedTLS reallocates the record buffers itself and
// their size is not MBEDTLS_SSL_{IN,OUT}_BUFFER_LEN: releasing pages would be wrong.
#ifdef MBEDTLS_SSL_VARIABLE_BUFFER_LENGTH
#error "release_record_pages() assumes fixed record buffers (no MBEDTLS_SSL_VARIABLE_BUFFER_LENGTH)"
#endif

namespace mqgate::tls_compat {

namespace {

// The first page is kept: it holds the allocator's header and the start of the buffer,
// where mbedTLS keeps the incoming record counter.
void release_pages(unsigned char* buf, size_t len) {
  const uintptr_t page = 4096;
  const uintptr_t begin = reinterpret_cast<uintptr_t>(buf);
  const uintptr_t start = (begin + page) & ~(page - 1);  // past the buffer's first page
  const uintptr_t end = (begin + len) & ~(page - 1);
  // A failure only means the pages stay resident: nothing to undo.
  if (end > start) (void)madvise(reinterpret_cast<void*>(start), end - start, MADV_DONTNEED);
}

}  // namespace

void set_ticket_rng(mbedtls_ssl_ticket_context& ticket, mbedtls_ctr_drbg_context& drbg) {
  ticket.f_rng = mbedtls_ctr_drbg_random;
  ticket.p_rng = &drbg;
}

void set_ticket_key_time(mbedtls_ssl_ticket_context& ticket, int index, uint32_t seconds) {
  ticket.keys[index].generation_time = seconds;
}

bool records_idle(const mbedtls_ssl_context& ssl) {
  return ssl.in_left == 0 && mbedtls_ssl_get_bytes_avail(&ssl) == 0 && ssl.out_left == 0;
}

void release_record_pages(mbedtls_ssl_context& ssl) {
  release_pages(ssl.in_buf, MBEDTLS_SSL_IN_BUFFER_LEN);
  release_pages(ssl.out_buf, MBEDTLS_SSL_OUT_BUFFER_LEN);
}

bool handshake_resuming(const mbedtls_ssl_context& ssl) {
  return ssl.handshake != nullptr && ssl.handshake->resume != 0;
}

}  // namespace mqgate::tls_compat
