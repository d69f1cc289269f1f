// Command-line handling shared by the tools: cxxopts setup with the seed's option names
// and descriptions, required options, number parsing, and the one-line error contract.
#pragma once

// cxxopts' hand-written option parser instead of std::regex: smaller and faster, and
// free of GCC 12's false -Wmaybe-uninitialized in <regex>. Every user of cxxopts in the
// tools includes it through this header, so all agree on the setting.
#define CXXOPTS_NO_REGEX 1
#include <cxxopts.hpp>

#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "keys.hpp"

namespace mqgate::pki {

// Runs a tool's main body. Every failure becomes one line on stderr,
// `<tool>: error: <message>`, and exit code 2 (usage) or 1 (anything else).
int run_tool(const char* tool, int argc, char** argv, const std::function<void(int, char**)>& body);

class CommandLine {
 public:
  CommandLine(const std::string& tool, const std::string& description);

  // Declares an option taking a value: `--name ARG  description`.
  void option(const std::string& name, const std::string& description,
              const std::string& arg = "TEXT");
  // An option that may be given several times.
  void repeatable(const std::string& name, const std::string& description,
                  const std::string& arg = "TEXT");
  // An option without a value.
  void flag(const std::string& name, const std::string& description);

  // Parses argv. --help prints the help and exits 0; unknown options, stray arguments and
  // single-valued options given twice throw UsageError.
  void parse(int argc, char** argv);

  bool has(const std::string& name) const;
  // The value of a required option; throws UsageError "missing required option --name".
  std::string required(const std::string& name) const;
  std::string value_or(const std::string& name, const std::string& fallback) const;
  std::vector<std::string> values(const std::string& name) const;
  bool is_set(const std::string& name) const;

  // A whole number in [min, max]; throws UsageError naming the option otherwise.
  unsigned number(const std::string& name, unsigned fallback, unsigned min, unsigned max) const;

 private:
  cxxopts::Options options_;
  std::vector<std::string> single_valued_;
  std::optional<cxxopts::ParseResult> result_;
};

// Option groups used by several tools, with the seed page's descriptions.
void add_output_options(CommandLine& cl);  // --output-dir, --force
void add_ca_options(CommandLine& cl);      // --ca-key, --ca-crt
void add_key_options(CommandLine& cl,      // --key-type, --key-bits
                     KeyType default_type = KeyType::kRsa);
void add_days_option(CommandLine& cl, unsigned default_days);

KeySpec key_spec(const CommandLine& cl, KeyType default_type = KeyType::kRsa);
unsigned validity_days(const CommandLine& cl, unsigned default_days);

}  // namespace mqgate::pki
