#include "der.hpp"

#include <mbedtls/asn1write.h>

#include "error.hpp"

namespace mqgate::pki {

DerWriter::DerWriter(size_t capacity) : buf_(capacity), p_(buf_.data() + buf_.size()) {}

void DerWriter::check(int ret) {
  if (ret == MBEDTLS_ERR_ASN1_BUF_TOO_SMALL) {
    // Capacities are sized from the inputs; this would be a bug, not a user error.
    throw Error("internal error: DER buffer too small");
  }
  check_mbedtls(ret, "cannot encode ASN.1");
}

void DerWriter::close(size_t mark, unsigned char tag) {
  size_t len = size() - mark;
  check(mbedtls_asn1_write_len(&p_, buf_.data(), len));
  check(mbedtls_asn1_write_tag(&p_, buf_.data(), tag));
}

void DerWriter::raw(ByteView bytes) {
  check(mbedtls_asn1_write_raw_buffer(&p_, buf_.data(), bytes.data(), bytes.size()));
}

void DerWriter::tagged(unsigned char tag, ByteView content) {
  size_t m = mark();
  raw(content);
  close(m, tag);
}

void DerWriter::oid(ByteView oid) {
  check(mbedtls_asn1_write_oid(&p_, buf_.data(), reinterpret_cast<const char*>(oid.data()),
                               oid.size()));
}

void DerWriter::integer(int value) {
  check(mbedtls_asn1_write_int(&p_, buf_.data(), value));
}

void DerWriter::integer(const mbedtls_mpi& value) {
  check(mbedtls_asn1_write_mpi(&p_, buf_.data(), &value));
}

void DerWriter::boolean(bool value) {
  check(mbedtls_asn1_write_bool(&p_, buf_.data(), value ? 1 : 0));
}

void DerWriter::octet_string(ByteView bytes) {
  check(mbedtls_asn1_write_octet_string(&p_, buf_.data(), bytes.data(), bytes.size()));
}

void DerWriter::bit_string(ByteView bytes) {
  check(mbedtls_asn1_write_bitstring(&p_, buf_.data(), bytes.data(), bytes.size() * 8));
}

void DerWriter::null() {
  check(mbedtls_asn1_write_null(&p_, buf_.data()));
}

void write_extension(DerWriter& w, ByteView oid, bool critical, ByteView value) {
  size_t ext = w.mark();
  w.octet_string(value);
  if (critical) w.boolean(true);  // DEFAULT FALSE: omitted when false (DER)
  w.oid(oid);
  w.close(ext, kSequence);
}

}  // namespace mqgate::pki
