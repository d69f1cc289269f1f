/*
 * A certificate time as seconds since the Unix epoch: the one conversion the broker's
 * TLS layer (core/transport/tls) and the PKI tools (pki-tools/x509.cpp) share. It lives
 * here, below both, so that plugins written against mbedTLS (certauth) can use it too.
 * Header-only (static inline) and C99, like bounded_read.h.
 *
 * Plain arithmetic on the proleptic Gregorian calendar rather than timegm(): no time
 * zone, no dependence on the width of time_t (9999-12-31 fits in int64_t), and no
 * silent normalising (timegm takes month 13 as next January; this refuses it).
 */
#ifndef MQGATE_X509_TIME_H
#define MQGATE_X509_TIME_H

#include <stdint.h>

#include <mbedtls/x509.h>

/* 1 if `year` is a leap year of the Gregorian calendar. */
static inline int mqgate_is_leap_year(int64_t year) {
  return (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
}

/* Days from 1970-01-01 to year-month-day (negative before it); month 1..12 and day
 * 1..31 must already be checked. Howard Hinnant's days_from_civil: the year is counted
 * from March, so February's leap day is the last day of its year, and 400-year eras
 * repeat exactly (146097 days each). */
static inline int64_t mqgate_days_from_civil(int64_t year, int month, int day) {
  const int64_t y = year - (month <= 2);
  const int64_t era = (y >= 0 ? y : y - 399) / 400;
  const int64_t year_of_era = y - era * 400; /* 0..399 */
  const int64_t day_of_year = (153 * (month > 2 ? month - 3 : month + 9) + 2) / 5 + day - 1;
  const int64_t day_of_era =
      year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year; /* 0..146096 */
  return era * 146097 + day_of_era - 719468; /* 719468: days from 0000-03-01 to 1970-01-01 */
}

/* The certificate time `t` (UTC: mbedTLS's fields of a UTCTime, with its year already
 * mapped to 1950..2049, or of a GeneralizedTime) in seconds since 1970-01-01T00:00:00Z,
 * stored in *seconds. Returns 0, or -1 with *seconds untouched when a field is out of the
 * range mbedTLS's parser accepts: year 0..9999, month 1..12, a day its month has, hour
 * 0..23, minute and second 0..59. (A CRL without nextUpdate leaves that time all zeros:
 * -1, not a date.) */
static inline int mqgate_x509_time_to_epoch(const mbedtls_x509_time *t, int64_t *seconds) {
  static const int kDaysInMonth[12] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
  int month_days;
  if (t->year < 0 || t->year > 9999 || t->mon < 1 || t->mon > 12) return -1;
  month_days = kDaysInMonth[t->mon - 1] + (t->mon == 2 && mqgate_is_leap_year(t->year));
  if (t->day < 1 || t->day > month_days || t->hour < 0 || t->hour > 23 || t->min < 0 ||
      t->min > 59 || t->sec < 0 || t->sec > 59)
    return -1;
  *seconds = mqgate_days_from_civil(t->year, t->mon, t->day) * 86400 + (int64_t)t->hour * 3600 +
             t->min * 60 + t->sec;
  return 0;
}

#endif /* MQGATE_X509_TIME_H */
