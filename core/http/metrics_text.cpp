#include "http/metrics_text.hpp"

#include <cassert>
#include <charconv>
#include <cinttypes>
#include <cmath>
#include <cstdio>

namespace mqgate::http {

namespace {

bool name_char(char c, bool first, bool colon_ok) {
  if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_') return true;
  if (c == ':') return colon_ok;
  return !first && c >= '0' && c <= '9';
}

// HELP text escapes backslash and newline; label values also the double quote.
void escape(std::string& out, std::string_view s, bool quote) {
  for (char c : s) {
    if (c == '\\') out += "\\\\";
    else if (c == '\n') out += "\\n";
    else if (quote && c == '"') out += "\\\"";
    else out.push_back(c);
  }
}

}  // namespace

bool MetricsText::valid_name(std::string_view name) {
  if (name.empty()) return false;
  for (size_t i = 0; i < name.size(); ++i)
    if (!name_char(name[i], i == 0, true)) return false;
  return true;
}

bool MetricsText::valid_label_name(std::string_view name) {
  if (name.empty() || name.substr(0, 2) == "__") return false;
  for (size_t i = 0; i < name.size(); ++i)
    if (!name_char(name[i], i == 0, false)) return false;
  return true;
}

void MetricsText::family(std::string_view name, Type type, std::string_view help) {
  assert(valid_name(name));
  const std::string base = valid_name(name) ? std::string(name) : "mqgate_invalid_metric_name";
  name_ = type == Type::kCounter ? base + "_total" : base;
  // In the 0.0.4 text format a counter's family is named with its "_total" suffix, in
  // HELP, TYPE and the samples alike.
  out_ += "# HELP " + name_ + " ";
  escape(out_, help, false);
  out_ += "\n# TYPE " + name_ + (type == Type::kCounter ? " counter\n" : " gauge\n");
}

void MetricsText::sample_prefix(const Labels& labels) {
  out_ += name_;
  if (labels.empty()) {
    out_ += ' ';
    return;
  }
  out_ += '{';
  bool first = true;
  for (const auto& [k, v] : labels) {
    assert(valid_label_name(k));
    if (!first) out_ += ',';
    first = false;
    out_.append(valid_label_name(k) ? k : "invalid_label");
    out_ += "=\"";
    escape(out_, v, true);
    out_ += '"';
  }
  out_ += "} ";
}

void MetricsText::sample(uint64_t value, const Labels& labels) {
  sample_prefix(labels);
  char buf[32];
  snprintf(buf, sizeof buf, "%" PRIu64 "\n", value);
  out_ += buf;
}

void MetricsText::sample(double value, const Labels& labels) {
  sample_prefix(labels);
  if (std::isnan(value)) {
    out_ += "NaN\n";
  } else if (std::isinf(value)) {
    out_ += value > 0 ? "+Inf\n" : "-Inf\n";
  } else {
    // The shortest text that reads back as the same double ("0.003", not 0.00299999...).
    char buf[40];
    const auto r = std::to_chars(buf, buf + sizeof buf, value);
    out_.append(buf, r.ptr);
    out_ += '\n';
  }
}

}  // namespace mqgate::http
