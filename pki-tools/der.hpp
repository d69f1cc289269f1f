// A small DER builder over mbedTLS's ASN.1 writer (mbedtls/asn1write.h).
//
// Like mbedTLS, it writes backwards: the last element of a structure is written first,
// and a constructed type is closed by writing its header after its content:
//
//   DerWriter w;
//   size_t seq = w.mark();
//   w.integer(2);       // second element
//   w.oid(some_oid);    // first element
//   w.close(seq, MBEDTLS_ASN1_CONSTRUCTED | MBEDTLS_ASN1_SEQUENCE);
//   std::vector<unsigned char> der = w.bytes();
#pragma once

#include <mbedtls/asn1.h>
#include <mbedtls/bignum.h>

#include <cstddef>
#include <span>
#include <string_view>
#include <vector>

namespace mqgate::pki {

using Bytes = std::vector<unsigned char>;
using ByteView = std::span<const unsigned char>;

inline constexpr unsigned char kSequence = MBEDTLS_ASN1_CONSTRUCTED | MBEDTLS_ASN1_SEQUENCE;

// An OID given as its DER content bytes, e.g. MBEDTLS_OID_SUBJECT_ALT_NAME.
inline ByteView oid_bytes(std::string_view oid) {
  return {reinterpret_cast<const unsigned char*>(oid.data()), oid.size()};
}

class DerWriter {
 public:
  explicit DerWriter(size_t capacity = 4096);

  // Bytes written so far; a mark for close().
  size_t mark() const { return size(); }
  size_t size() const { return static_cast<size_t>(buf_.data() + buf_.size() - p_); }

  // Writes the tag and length of everything written since `mark`.
  void close(size_t mark, unsigned char tag);

  void raw(ByteView bytes);
  void tagged(unsigned char tag, ByteView content);  // tag + length + content
  void oid(ByteView oid);
  void integer(int value);
  void integer(const mbedtls_mpi& value);
  void boolean(bool value);
  void octet_string(ByteView bytes);
  void bit_string(ByteView bytes);  // whole bytes, no unused bits
  void null();

  // The finished encoding.
  Bytes bytes() const { return Bytes(view().begin(), view().end()); }
  ByteView view() const { return {p_, size()}; }

 private:
  void check(int ret);

  Bytes buf_;
  unsigned char* p_;
};

// Writes one X.509 Extension (extnID, critical, extnValue) whose value is `value`.
void write_extension(DerWriter& w, ByteView oid, bool critical, ByteView value);

}  // namespace mqgate::pki
