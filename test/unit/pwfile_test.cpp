// Mosquitto password files (plugins/passwd/pwfile.c): parsing, refusals with file and
// line, verification of hashes written by Debian's mosquitto_passwd (made here at run
// time in a temp dir: no password file is committed), the dummy verification for unknown
// users (a typical entry's cost), and the cost of one verification (printed, not asserted).
#include <doctest/doctest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>

#include "pwfile.h"

namespace {

const char* kMosquittoPasswd = "/usr/bin/mosquitto_passwd";

struct TempDir {
  std::string path;
  TempDir() {
    char tmpl[] = "/tmp/mqgate-pwfile-XXXXXX";
    REQUIRE(::mkdtemp(tmpl) != nullptr);
    path = tmpl;
  }
  ~TempDir() { std::system(("rm -rf '" + path + "'").c_str()); }
  std::string file(const std::string& name) const { return path + "/" + name; }
};

std::string slurp(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

struct Parsed {
  pwfile* f = nullptr;
  std::string err;
  explicit Parsed(const std::string& text, const char* name = "pw") {
    char buf[PW_ERR_LEN] = "";
    f = pwfile_parse(name, text.data(), text.size(), buf, sizeof buf);
    err = buf;
  }
  ~Parsed() { pwfile_free(f); }
  bool check(const char* user, const std::string& pw) const {
    return pwfile_check(f, user, pw.data(), pw.size()) == 1;
  }
};

std::string make_line(const std::string& user, const std::string& pw, pw_type type,
                      unsigned it = PW_DEFAULT_ITERATIONS) {
  pw_hash h;
  char err[PW_ERR_LEN], text[256];
  REQUIRE(pw_hash_make(type, it, pw.data(), pw.size(), &h, err, sizeof err) == 0);
  REQUIRE(pw_hash_format(&h, text, sizeof text) == 0);
  return user + ":" + text + "\n";
}

const std::string kAliceLine =  // shape only: its hash is 64 zero bytes, no password
    "alice:$7$101$AAAAAAAAAAAAAAAA$" + std::string(86, 'A') + "==\n";

}  // namespace

TEST_CASE("hashes written by Debian's mosquitto_passwd verify") {
  REQUIRE(::access(kMosquittoPasswd, X_OK) == 0);
  TempDir d;
  std::string pw = d.file("pw");
  auto run = [](const std::string& cmd) { REQUIRE(std::system(cmd.c_str()) == 0); };
  run(std::string(kMosquittoPasswd) + " -c -b '" + pw + "' alice 'alice secret'");
  run(std::string(kMosquittoPasswd) + " -b '" + pw + "' bob 'p@ss:w$rd'");
  run(std::string(kMosquittoPasswd) + " -H sha512 -b '" + pw + "' carol carolpw");
  run(std::string(kMosquittoPasswd) + " -I 1000 -b '" + pw + "' dave davepw");
  std::string text = slurp(pw);
  CHECK(text.find("alice:$7$101$") != std::string::npos);  // 2.0.11's default
  CHECK(text.find("carol:$6$") != std::string::npos);
  CHECK(text.find("dave:$7$1000$") != std::string::npos);

  char err[PW_ERR_LEN] = "";
  pwfile* f = pwfile_load(pw.c_str(), err, sizeof err);
  REQUIRE_MESSAGE(f != nullptr, err);
  CHECK(pwfile_count(f) == 4);
  auto ok = [&](const char* u, const std::string& p) {
    return pwfile_check(f, u, p.data(), p.size()) == 1;
  };
  CHECK(ok("alice", "alice secret"));
  CHECK(ok("bob", "p@ss:w$rd"));
  CHECK(ok("carol", "carolpw"));
  CHECK(ok("dave", "davepw"));
  CHECK_FALSE(ok("alice", "alice secreT"));
  CHECK_FALSE(ok("alice", "alice secret "));
  CHECK_FALSE(ok("alice", ""));
  CHECK_FALSE(ok("carol", "carolp"));
  CHECK_FALSE(ok("nobody", "alice secret"));
  CHECK_FALSE(ok("Alice", "alice secret"));
  CHECK(pwfile_check(f, "alice", nullptr, 0) == 0);
  CHECK(pwfile_check(f, nullptr, "x", 1) == 0);
  const pw_hash* h = pwfile_hash(f, pwfile_find(f, "dave"));
  REQUIRE(h != nullptr);
  CHECK(h->type == PW_SHA512_PBKDF2);
  CHECK(h->iterations == 1000);
  CHECK(h->salt_len == PW_SALT_BYTES);
  pwfile_free(f);
}

TEST_CASE("our hashes round-trip and keep their parameters") {
  for (pw_type t : {PW_SHA512_PBKDF2, PW_SHA512}) {
    std::string line = make_line("u", "pässwörd", t, 2000);
    Parsed p(line);
    REQUIRE_MESSAGE(p.f != nullptr, p.err);
    CHECK(p.check("u", "pässwörd"));
    CHECK_FALSE(p.check("u", "passwörd"));
    const pw_hash* h = pwfile_hash(p.f, 0);
    CHECK(h->type == t);
    if (t == PW_SHA512_PBKDF2) CHECK(line.rfind("u:$7$2000$", 0) == 0);
    // the text we write is what we read
    char text[256];
    REQUIRE(pw_hash_format(h, text, sizeof text) == 0);
    CHECK(std::string("u:") + text + "\n" == line);
  }
  // two hashes of one password differ (fresh salt)
  CHECK(make_line("u", "x", PW_SHA512_PBKDF2) != make_line("u", "x", PW_SHA512_PBKDF2));
}

TEST_CASE("comments, blank lines, blanks around fields and CRLF are accepted") {
  std::string alice = make_line("alice", "a", PW_SHA512_PBKDF2);
  std::string bob = make_line("bob", "b", PW_SHA512);
  bob.insert(bob.size() - 1, "\r");  // CRLF
  Parsed p("# users\n\n   \n  # indented comment\n" + alice + "#bob:$9$x\n" + bob + "  carol : " +
           make_line("", "c", PW_SHA512_PBKDF2).substr(1));
  REQUIRE_MESSAGE(p.f != nullptr, p.err);
  CHECK(pwfile_count(p.f) == 3);
  CHECK(p.check("alice", "a"));
  CHECK(p.check("bob", "b"));
  CHECK(p.check("carol", "c"));
  Parsed empty("");
  REQUIRE(empty.f != nullptr);
  CHECK(pwfile_count(empty.f) == 0);
  CHECK_FALSE(empty.check("x", "y"));
  Parsed no_newline(kAliceLine.substr(0, kAliceLine.size() - 1));
  CHECK(no_newline.f != nullptr);
}

TEST_CASE("a bad file is refused with file, line and reason") {
  const std::string good = kAliceLine;
  const std::string h7 = kAliceLine.substr(6);  // "$7$101$...\n"
  struct Case {
    std::string text;
    const char* expect;
  } cases[] = {
      {"# c\n" + good + "garbage\n", "pw:3: expected \"username:hash\""},
      {good + "bob\n", "pw:2: expected"},
      {":" + h7, "pw:1: empty username"},
      {"bob:\n", "pw:1: user has no password hash"},
      {"bob:plaintext\n", "pw:1: password is not a hash"},
      {"bob:$5$abc$def\n", "pw:1: unknown hash type \"$5$\""},
      {"bob:$7$101$AAAA\n", "pw:1: $7$ hash needs 4"},
      {"bob:$7$101$a$b$c\n", "pw:1: too many '$'"},
      {"bob:$6$AAAA$AAAA$x\n", "pw:1: $6$ hash needs 3"},
      {"bob:$7$0$" + h7.substr(7), "pw:1: iteration count 0 out of range"},
      {"bob:$7$1000001$" + h7.substr(7), "iteration count 1000001 out of range 1..1000000"},
      {"bob:$7$99999999999$" + h7.substr(7), "bad iteration count"},
      {"bob:$7$-5$" + h7.substr(7), "bad iteration count"},
      {"bob:$7$101$AA!A$" + h7.substr(24), "pw:1: bad base64 salt"},
      {"bob:$7$101$AAAAAAAAAAAAAAAA$AAAA\n", "hash is 3 bytes, SHA-512 needs 64"},
      {"bob:$7$101$AAAAAAAAAAAA$" + h7.substr(24), "pw:1: salt is 9 bytes; Mosquitto accepts only 12"},
      {"bob:$6$AAAAAAAAAAAAAAAAAAAA$" + h7.substr(24), "salt is 15 bytes"},
      {"bob:$7$101$AAAAAAAAAAAAAAAA$A*AA\n", "bad base64 hash"},
      {"bob:$7$101$AAAAAAAAAAAAAAAA$AAA=A\n", "bad base64 hash"},
      {good + "x:y:" + h7, "pw:2: more than one ':'"},
      {good + good, "pw:2: duplicate user \"alice\" (first on line 1)"},
      {good + "\n#\n" + good, "pw:4: duplicate user"},
      {std::string("bo\x01") + "b:" + h7, "control character in username"},
      {std::string("bob:$7$101\0$", 12) + h7.substr(7), "pw:1: NUL byte"},
      {good + std::string(PW_MAX_LINE_BYTES + 1, 'x') + "\n", "pw:2: line longer than 65536"},
  };
  for (const auto& c : cases) {
    CAPTURE(c.text.substr(0, 80));
    Parsed p(c.text);
    CHECK(p.f == nullptr);
    CHECK_MESSAGE(p.err.find(c.expect) != std::string::npos, p.err);
  }
}

TEST_CASE("files: missing, not regular, over the size cap") {
  TempDir d;
  char err[PW_ERR_LEN];
  CHECK(pwfile_load(d.file("none").c_str(), err, sizeof err) == nullptr);
  CHECK(std::string(err).find("No such file") != std::string::npos);
  CHECK(pwfile_load(d.path.c_str(), err, sizeof err) == nullptr);
  CHECK(std::string(err).find("not a regular file") != std::string::npos);
  std::string big = d.file("big");
  FILE* f = std::fopen(big.c_str(), "w");
  REQUIRE(f != nullptr);
  REQUIRE(::ftruncate(fileno(f), PW_MAX_FILE_BYTES + 1) == 0);  // sparse
  std::fclose(f);
  CHECK(pwfile_load(big.c_str(), err, sizeof err) == nullptr);
  CHECK(std::string(err).find("over 67108864 bytes") != std::string::npos);
}

TEST_CASE("usernames the CLI refuses") {
  char err[PW_ERR_LEN];
  CHECK(pw_username_check("alice", err, sizeof err) == 0);
  CHECK(pw_username_check("a b", err, sizeof err) == 0);
  for (const char* bad : {"", "a:b", "#a", " a", "a ", "a\tb", "a\nb"})
    CHECK_MESSAGE(pw_username_check(bad, err, sizeof err) != 0, bad);
  CHECK(pw_username_check(std::string(65536, 'u').c_str(), err, sizeof err) != 0);
}

TEST_CASE("an unknown user costs a typical entry's verification, not the costliest") {
  // One expensive entry among cheap ones must not make every unknown name cost its CPU
  // (the passwd plugin's answer floor hides the time difference instead).
  std::string text = make_line("alice", "right", PW_SHA512_PBKDF2, 20000) +
                     make_line("bob", "right", PW_SHA512_PBKDF2, 101) +
                     make_line("carol", "right", PW_SHA512_PBKDF2, 101) +
                     make_line("old", "right", PW_SHA512);
  Parsed p(text);
  REQUIRE(p.f != nullptr);
  const pw_hash* dummy = pwfile_dummy(p.f);
  CHECK(dummy->type == PW_SHA512_PBKDF2);
  CHECK(dummy->iterations == 101);  // the median (0, 101, 101, 20000), not 20000
  REQUIRE(pwfile_costliest(p.f) != (size_t)-1);
  CHECK(std::string(pwfile_username(p.f, pwfile_costliest(p.f))) == "alice");
  CHECK(pwfile_line(p.f, pwfile_costliest(p.f)) == 1);
  CHECK_FALSE(p.check("mallory", "right"));
  CHECK_FALSE(p.check("alice", "wrong"));
  CHECK(p.check("bob", "right"));
  // $6$ files: the dummy is a $6$ hash too; an empty file: $7$ at the default count.
  Parsed sha(make_line("a", "x", PW_SHA512) + make_line("b", "x", PW_SHA512));
  REQUIRE(sha.f != nullptr);
  CHECK(pwfile_dummy(sha.f)->type == PW_SHA512);
  Parsed empty("# nobody\n");
  REQUIRE(empty.f != nullptr);
  CHECK(pwfile_dummy(empty.f)->iterations == PW_DEFAULT_ITERATIONS);
  CHECK(pwfile_costliest(empty.f) == (size_t)-1);
  CHECK_FALSE(empty.check("mallory", "x"));
  // Two entries, one cheap and one costly: the lower median, the cheap one.
  Parsed two(make_line("a", "x", PW_SHA512_PBKDF2, 101) +
             make_line("boss", "x", PW_SHA512_PBKDF2, 5000));
  REQUIRE(two.f != nullptr);
  CHECK(pwfile_dummy(two.f)->iterations == 101);
}

TEST_CASE("cost of one $7$ verification at Mosquitto's default (printed, not asserted)") {
  std::string line = make_line("u", "correct horse", PW_SHA512_PBKDF2);
  Parsed p(line);
  REQUIRE(p.f != nullptr);
  const int n = 50;
  auto t0 = std::chrono::steady_clock::now();
  for (int i = 0; i < n; i++) CHECK(p.check("u", "correct horse"));
  double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  MESSAGE("one $7$ verification, " << PW_DEFAULT_ITERATIONS << " iterations: " << s / n * 1e6
                                   << " us (this build; see pwfile_bench for a release one)");
}
