// Writes the Prometheus text exposition format (version 0.0.4): one family at a time,
// HELP and TYPE first, then its samples; label values and help text escaped as the
// format says. Pure: a string builder, no knowledge of where the numbers come from.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace mqgate::http {

class MetricsText {
 public:
  enum class Type : uint8_t { kCounter, kGauge };
  using Labels = std::vector<std::pair<std::string_view, std::string_view>>;

  // Starts a family. `name` must match [a-zA-Z_:][a-zA-Z0-9_:]* (checked: a bad name is
  // a programming error and aborts in debug builds, and is replaced in release builds).
  void family(std::string_view name, Type type, std::string_view help);
  // A sample of the current family (counters get the "_total" suffix automatically).
  void sample(double value, const Labels& labels = {});
  void sample(uint64_t value, const Labels& labels = {});

  const std::string& text() const { return out_; }
  static constexpr const char* kContentType = "text/plain; version=0.0.4; charset=utf-8";

  static bool valid_name(std::string_view name);
  static bool valid_label_name(std::string_view name);

 private:
  void sample_prefix(const Labels& labels);
  std::string out_;
  std::string name_;  // current family's sample name
};

}  // namespace mqgate::http
