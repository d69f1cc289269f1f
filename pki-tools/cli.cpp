#include "cli.hpp"

#include <algorithm>
#include <charconv>
#include <cstdio>
#include <cstdlib>
#include <new>

#include "error.hpp"
#include "issue.hpp"

namespace mqgate::pki {

namespace {

// cxxopts says "Option ‘name’ does not exist"; say "option --name does not exist".
std::string usage_message(std::string s) {
  const std::string open = "Option \u2018", close = "\u2019";
  if (s.rfind(open, 0) == 0) {
    size_t end = s.find(close, open.size());
    if (end != std::string::npos) {
      std::string name = s.substr(open.size(), end - open.size());
      s = "option " + std::string(name.size() == 1 ? "-" : "--") + name +
          s.substr(end + close.size());
    }
  }
  for (const std::string q : {"\u2018", "\u2019"}) {
    for (size_t pos; (pos = s.find(q)) != std::string::npos;)
      s.replace(pos, q.size(), "'");
  }
  return s;
}

void print_error(const std::string& message) {
  std::fprintf(stderr, "%s: error: %s\n", program_name().c_str(), message.c_str());
}

}  // namespace

int run_tool(const char* tool, int argc, char** argv,
             const std::function<void(int, char**)>& body) {
  set_program_name(tool);
  try {
    body(argc, argv);
    return kExitOk;
  } catch (const Error& e) {
    print_error(e.what());
    return e.exit_code();
  } catch (const cxxopts::exceptions::exception& e) {
    print_error(usage_message(e.what()) + " (see --help)");
    return kExitUsage;
  } catch (const std::bad_alloc&) {
    print_error("out of memory");
    return kExitFailure;
  } catch (const std::exception& e) {
    print_error(e.what());
    return kExitFailure;
  }
}

CommandLine::CommandLine(const std::string& tool, const std::string& description)
    : options_(tool, description) {
  options_.custom_help("[OPTIONS]");
  options_.set_width(100);
}

void CommandLine::option(const std::string& name, const std::string& description,
                         const std::string& arg) {
  options_.add_options()(name, description, cxxopts::value<std::string>(), arg);
  single_valued_.push_back(name);
}

void CommandLine::repeatable(const std::string& name, const std::string& description,
                             const std::string& arg) {
  options_.add_options()(name, description, cxxopts::value<std::vector<std::string>>(), arg);
}

void CommandLine::flag(const std::string& name, const std::string& description) {
  options_.add_options()(name, description);
  single_valued_.push_back(name);
}

void CommandLine::parse(int argc, char** argv) {
  options_.add_options()("help", "Show this message and exit.");
  result_ = options_.parse(argc, argv);
  if (result_->count("help")) {
    std::fputs(options_.help().c_str(), stdout);
    std::exit(kExitOk);
  }
  if (!result_->unmatched().empty()) {
    throw UsageError("unexpected argument '" + result_->unmatched().front() +
                     "' (options are written --name value; see --help)");
  }
  for (const std::string& name : single_valued_) {
    if (result_->count(name) > 1) throw UsageError("--" + name + " given more than once");
  }
}

bool CommandLine::has(const std::string& name) const {
  return result_->count(name) > 0;
}

std::string CommandLine::required(const std::string& name) const {
  if (!has(name)) throw UsageError("missing required option --" + name + " (see --help)");
  return (*result_)[name].as<std::string>();
}

std::string CommandLine::value_or(const std::string& name, const std::string& fallback) const {
  return has(name) ? (*result_)[name].as<std::string>() : fallback;
}

std::vector<std::string> CommandLine::values(const std::string& name) const {
  return has(name) ? (*result_)[name].as<std::vector<std::string>>() : std::vector<std::string>{};
}

bool CommandLine::is_set(const std::string& name) const {
  return has(name) && (*result_)[name].as<bool>();
}

unsigned CommandLine::number(const std::string& name, unsigned fallback, unsigned min,
                             unsigned max) const {
  if (!has(name)) return fallback;
  std::string text = (*result_)[name].as<std::string>();
  unsigned value = 0;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (text.empty() || ec != std::errc() || end != text.data() + text.size() || value < min ||
      value > max) {
    throw UsageError("--" + name + " '" + text + "' must be a whole number from " +
                     std::to_string(min) + " to " + std::to_string(max));
  }
  return value;
}

void add_output_options(CommandLine& cl) {
  cl.option("output-dir", "output directory (created if missing) [default: current directory]");
  cl.flag("force", "overwrite existing output files");
}

void add_ca_options(CommandLine& cl) {
  cl.option("ca-key", "root key filename used for signing. [default: ca.key]");
  cl.option("ca-crt", "root cert filename used for signing. [default: ca.crt]");
}

void add_key_options(CommandLine& cl, KeyType default_type) {
  const std::string fallback = default_type == KeyType::kRsa ? "rsa" : "ec";
  cl.option("key-type", "key algorithm: rsa, or ec for NIST P-256 [default: " + fallback + "]",
            "rsa|ec");
  cl.option("key-bits", "RSA key size: 2048, 3072 or 4096 [default: 2048]", "N");
}

void add_days_option(CommandLine& cl, unsigned default_days) {
  cl.option("days",
            "validity in days, from 1 to " + std::to_string(kMaxDays) +
                " [default: " + std::to_string(default_days) + "]",
            "N");
}

KeySpec key_spec(const CommandLine& cl, KeyType default_type) {
  KeySpec spec;
  std::string type = cl.value_or("key-type", default_type == KeyType::kRsa ? "rsa" : "ec");
  if (type == "rsa") {
    spec.type = KeyType::kRsa;
  } else if (type == "ec") {
    spec.type = KeyType::kEc;
  } else {
    throw UsageError("--key-type '" + type + "' must be rsa or ec");
  }
  if (cl.has("key-bits")) {
    if (spec.type != KeyType::kRsa) throw UsageError("--key-bits applies to --key-type rsa only");
    spec.rsa_bits = cl.number("key-bits", 2048, 0, 1u << 20);
    if (std::find(std::begin(kRsaBitsAllowed), std::end(kRsaBitsAllowed), spec.rsa_bits) ==
        std::end(kRsaBitsAllowed)) {
      throw UsageError("--key-bits '" + std::to_string(spec.rsa_bits) +
                       "' must be 2048, 3072 or 4096");
    }
  }
  return spec;
}

unsigned validity_days(const CommandLine& cl, unsigned default_days) {
  return cl.number("days", default_days, 1, kMaxDays);
}

}  // namespace mqgate::pki
