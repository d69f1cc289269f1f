// The one certificate-time conversion (plugins/common/x509_time.h) and its two users:
// the broker's TLS layer (x509_time_to_epoch) and the PKI tools (to_time_t, and
// write_x509_time's choice of UTCTime or GeneralizedTime).
#include <doctest/doctest.h>

#include <mbedtls/asn1.h>
#include <mbedtls/x509.h>

#include <cstdint>
#include <ctime>
#include <optional>
#include <string>

#include "common/x509_time.h"
#include "error.hpp"
#include "transport/tls/tls.hpp"
#include "x509.hpp"

namespace {

mbedtls_x509_time at(int year, int mon, int day, int hour = 0, int min = 0, int sec = 0) {
  mbedtls_x509_time t{};
  t.year = year;
  t.mon = mon;
  t.day = day;
  t.hour = hour;
  t.min = min;
  t.sec = sec;
  return t;
}

std::optional<int64_t> epoch(const mbedtls_x509_time& t) {
  int64_t seconds = -12345;
  if (mqgate_x509_time_to_epoch(&t, &seconds) != 0) {
    CHECK(seconds == -12345);  // left alone
    return std::nullopt;
  }
  // The TLS layer's and the PKI tools' wrappers say the same.
  CHECK(mqgate::x509_time_to_epoch(t) == seconds);
  CHECK(mqgate::pki::to_time_t(t) == static_cast<std::time_t>(seconds));
  return seconds;
}

// A DER Time (tag: MBEDTLS_ASN1_UTC_TIME or MBEDTLS_ASN1_GENERALIZED_TIME) as mbedTLS's
// certificate and CRL parsers read it.
mbedtls_x509_time parse_time(unsigned char tag, const std::string& text) {
  std::string der(1, static_cast<char>(tag));
  der += static_cast<char>(text.size());
  der += text;
  auto* p = reinterpret_cast<unsigned char*>(der.data());
  mbedtls_x509_time t{};
  REQUIRE(mbedtls_x509_get_time(&p, p + der.size(), &t) == 0);
  return t;
}

}  // namespace

TEST_CASE("certificate times: the epoch, leap days, 2038, 2106 and 9999") {
  CHECK(epoch(at(1970, 1, 1)) == 0);
  CHECK(epoch(at(1969, 12, 31, 23, 59, 59)) == -1);
  CHECK(epoch(at(1950, 1, 1)) == -631152000);
  // Leap years: every 4th, not every 100th, but every 400th.
  CHECK(epoch(at(2000, 2, 29, 12)) == 951825600);
  CHECK(epoch(at(2024, 2, 29, 23, 59, 59)) == 1709251199);
  CHECK(epoch(at(2024, 3, 1)) == 1709251200);
  CHECK(epoch(at(2100, 2, 28, 23, 59, 59)) == 4107542399);
  CHECK(epoch(at(2100, 3, 1)) == 4107542400);
  CHECK(epoch(at(1600, 2, 29)) == -11670998400);
  // Past 32-bit time_t (signed, then unsigned).
  CHECK(epoch(at(2038, 1, 19, 3, 14, 7)) == 2147483647);
  CHECK(epoch(at(2038, 1, 19, 3, 14, 8)) == 2147483648);
  CHECK(epoch(at(2106, 2, 7, 6, 28, 16)) == 4294967296);
  // Where RFC 5280 switches from UTCTime to GeneralizedTime.
  CHECK(epoch(at(2049, 12, 31, 23, 59, 59)) == 2524607999);
  CHECK(epoch(at(2050, 1, 1)) == 2524608000);
  // The ends of what mbedTLS parses (a GeneralizedTime's four digits).
  CHECK(epoch(at(9999, 12, 31, 23, 59, 59)) == 253402300799);
  CHECK(epoch(at(0, 1, 1)) == -62167219200);
}

TEST_CASE("certificate times agree with timegm, day by day, from 1600 to 2400") {
  const int kDays[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
  int64_t checked = 0;
  for (int year = 1600; year <= 2400; ++year) {
    const bool leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
    for (int mon = 1; mon <= 12; ++mon) {
      const int days = kDays[mon - 1] + (mon == 2 && leap ? 1 : 0);
      for (int day = 1; day <= days; ++day) {
        std::tm tm{};
        tm.tm_year = year - 1900;
        tm.tm_mon = mon - 1;
        tm.tm_mday = day;
        tm.tm_hour = 23;
        tm.tm_min = 59;
        tm.tm_sec = 58;
        const mbedtls_x509_time t = at(year, mon, day, 23, 59, 58);
        int64_t seconds = 0;
        REQUIRE(mqgate_x509_time_to_epoch(&t, &seconds) == 0);
        REQUIRE(seconds == static_cast<int64_t>(timegm(&tm)));
        checked++;
      }
    }
  }
  CHECK(checked == 292560);  // 801 years, 195 of them leap
}

TEST_CASE("a field out of range is refused, never carried into the next month or year") {
  CHECK_FALSE(epoch(at(0, 0, 0)));  // a CRL without nextUpdate: all zeros
  CHECK_FALSE(epoch(at(2024, 0, 1)));
  CHECK_FALSE(epoch(at(2024, 13, 1)));  // timegm would make it January 2025
  CHECK_FALSE(epoch(at(2024, 1, 0)));
  CHECK_FALSE(epoch(at(2024, 1, 32)));
  CHECK_FALSE(epoch(at(2024, 4, 31)));
  CHECK_FALSE(epoch(at(2023, 2, 29)));
  CHECK_FALSE(epoch(at(2100, 2, 29)));
  CHECK_FALSE(epoch(at(2024, 1, 1, 24)));
  CHECK_FALSE(epoch(at(2024, 1, 1, 0, 60)));
  CHECK_FALSE(epoch(at(2024, 1, 1, 0, 0, 60)));
  CHECK_FALSE(epoch(at(2024, 1, 1, -1)));
  CHECK_FALSE(epoch(at(2024, 1, 1, 0, -1)));
  CHECK_FALSE(epoch(at(2024, 1, 1, 0, 0, -1)));
  CHECK_FALSE(epoch(at(-1, 12, 31)));
  CHECK_FALSE(epoch(at(10000, 1, 1)));
  CHECK_FALSE(epoch(at(2147483647, 12, 31, 23, 59, 59)));
  CHECK_FALSE(epoch(at(2024, 2147483647, 1)));
}

TEST_CASE("the wrappers say when a time is not a date") {
  CHECK_FALSE(mqgate::x509_time_to_epoch(at(2024, 2, 30)).has_value());
  CHECK_THROWS_AS(mqgate::pki::to_time_t(at(2024, 2, 30)), mqgate::pki::Error);
  CHECK_THROWS_WITH(mqgate::pki::to_time_t(at(0, 0, 0)),
                    "a certificate time is not a date: 0000-00-00 00:00:00");
}

TEST_CASE("UTCTime and GeneralizedTime as mbedTLS parses them") {
  // UTCTime's two-digit years: 50..99 are 19xx, 00..49 are 20xx (RFC 5280 4.1.2.5.1).
  CHECK(epoch(parse_time(MBEDTLS_ASN1_UTC_TIME, "700101000000Z")) == 0);
  CHECK(epoch(parse_time(MBEDTLS_ASN1_UTC_TIME, "500101000000Z")) == -631152000);
  CHECK(epoch(parse_time(MBEDTLS_ASN1_UTC_TIME, "491231235959Z")) == 2524607999);
  CHECK(epoch(parse_time(MBEDTLS_ASN1_UTC_TIME, "380119031408Z")) == 2147483648);
  CHECK(epoch(parse_time(MBEDTLS_ASN1_GENERALIZED_TIME, "20500101000000Z")) == 2524608000);
  CHECK(epoch(parse_time(MBEDTLS_ASN1_GENERALIZED_TIME, "99991231235959Z")) == 253402300799);
  CHECK(epoch(parse_time(MBEDTLS_ASN1_GENERALIZED_TIME, "20240229120000Z")) == 1709208000);
}

TEST_CASE("the PKI tools write times that read back to the same second") {
  for (const int64_t t :
       {int64_t{0}, int64_t{951825600}, int64_t{2147483647}, int64_t{2147483648},
        int64_t{2524607999}, int64_t{2524608000}, int64_t{4294967296}, int64_t{253402300799}}) {
    CAPTURE(t);
    mqgate::pki::DerWriter w;
    mqgate::pki::write_x509_time(w, static_cast<std::time_t>(t));
    const mqgate::pki::Bytes der = w.bytes();
    REQUIRE(!der.empty());
    // UTCTime before 2050, GeneralizedTime from 2050 on (RFC 5280 4.1.2.5).
    CHECK(der[0] == (t < 2524608000 ? MBEDTLS_ASN1_UTC_TIME : MBEDTLS_ASN1_GENERALIZED_TIME));
    auto* p = const_cast<unsigned char*>(der.data());
    mbedtls_x509_time parsed{};
    REQUIRE(mbedtls_x509_get_time(&p, der.data() + der.size(), &parsed) == 0);
    CHECK(epoch(parsed) == t);
  }
}
