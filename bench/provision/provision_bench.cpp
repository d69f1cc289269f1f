// provision_bench: what the provision plugin's worker does per request (issue 24,
// bench/RESULTS.md "provisioning"): check_csr (parse the PKCS#10 CSR, verify its
// signature with its own key, check the key and extensions) then Signer::sign (build
// and sign the device certificate, PEM, chain appended), with the plugin's own sources.
// The CAs are made with the PKI tools in a temporary folder: a root (EC P-256) and two
// issuing CAs under it, EC P-256 and RSA-2048. The device CSRs (EC P-256, CN=<id>) are
// made beforehand (a pool of --pool distinct keys, cycled), outside the timing.
// Prints, per issuing key and thread count, the run of median wall time out of --runs:
// certificates/s, microseconds per certificate (wall time / requests), and the mean time
// of one check_csr and of one sign as a thread saw it (with 2 threads, sign includes the
// wait for the Signer's lock: one signature at a time, as in the plugin).
//
//   provision_bench [--tools DIR] [--ec N] [--rsa N] [--runs N] [--threads 1,2] [--pool N]
//
// --tools: where ca_creds is (default: ../pki-tools next to this binary's folder).
// Threads share one Signer, as the plugin's signing threads do (`threads = N`).
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <string>
#include <thread>
#include <vector>

#include "csr.hpp"
#include "csr_check.hpp"
#include "error.hpp"
#include "keys.hpp"
#include "random.hpp"
#include "signer.hpp"

using namespace mqgate;
namespace fs = std::filesystem;

namespace {

void run_or_die(const std::string& cmd) {
  if (std::system((cmd + " >/dev/null 2>&1").c_str()) != 0) {
    std::fprintf(stderr, "provision_bench: failed: %s\n", cmd.c_str());
    std::exit(1);
  }
}

struct Run {
  double secs = 0;                   // wall time
  double check_us = 0, sign_us = 0;  // mean per request of check_csr and of sign (per thread)
};

// One run: `n` requests over `threads` threads.
Run run_once(provision::Signer& signer, const std::vector<std::string>& csrs, size_t n,
                unsigned threads) {
  using Clock = std::chrono::steady_clock;
  std::atomic<size_t> next{0}, failed{0};
  std::atomic<long long> check_ns{0}, sign_ns{0};
  const provision::KeyPolicy policy;
  auto work = [&] {
    long long c = 0, g = 0;
    for (size_t i; (i = next.fetch_add(1)) < n;) {
      provision::Csr csr;
      const auto t0 = Clock::now();
      if (provision::check_csr(csrs[i % csrs.size()], policy, csr)) {
        failed.fetch_add(1);
        continue;
      }
      const auto t1 = Clock::now();
      const provision::Issued out =
          signer.sign("dev-" + std::to_string(i), "bench.example", 365, csr.get().pk);
      const auto t2 = Clock::now();
      c += std::chrono::duration_cast<std::chrono::nanoseconds>(t1 - t0).count();
      g += std::chrono::duration_cast<std::chrono::nanoseconds>(t2 - t1).count();
      if (out.chain_pem.empty()) failed.fetch_add(1);
    }
    check_ns += c;
    sign_ns += g;
  };
  const auto t0 = std::chrono::steady_clock::now();
  std::vector<std::thread> pool;
  for (unsigned t = 1; t < threads; ++t) pool.emplace_back(work);
  work();
  for (auto& t : pool) t.join();
  Run r;
  r.secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  r.check_us = check_ns.load() / 1e3 / n;
  r.sign_us = sign_ns.load() / 1e3 / n;
  if (failed) {
    std::fprintf(stderr, "provision_bench: %zu requests failed\n", failed.load());
    std::exit(1);
  }
  return r;
}

}  // namespace

int main(int argc, char** argv) {
  size_t n_ec = 2000, n_rsa = 500, pool_n = 200;
  int runs = 5;
  std::vector<unsigned> thread_counts = {1, 2};
  std::string tools =
      (fs::canonical("/proc/self/exe").parent_path().parent_path() / "pki-tools")
          .string();
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string a = argv[i], v = argv[i + 1];
    if (a == "--ec") n_ec = std::strtoul(v.c_str(), nullptr, 10);
    else if (a == "--rsa") n_rsa = std::strtoul(v.c_str(), nullptr, 10);
    else if (a == "--runs") runs = std::max(1, std::atoi(v.c_str()));
    else if (a == "--pool") pool_n = std::max<size_t>(1, std::strtoul(v.c_str(), nullptr, 10));
    else if (a == "--tools") tools = v;
    else if (a == "--threads") {
      thread_counts.clear();
      for (size_t p = 0; p < v.size();) {
        const size_t q = v.find(',', p);
        thread_counts.push_back(
            std::max(1, std::atoi(v.substr(p, q == std::string::npos ? q : q - p).c_str())));
        p = q == std::string::npos ? v.size() : q + 1;
      }
    } else {
      std::fprintf(stderr, "provision_bench: unknown option %s\n", a.c_str());
      return 2;
    }
  }
  char tmpl[] = "/tmp/provision-bench-XXXXXX";
  if (!mkdtemp(tmpl)) return 1;
  const std::string dir = tmpl;
  const std::string subj =
      " --country US --state NY --locality NY --org-name bench --key-type ";
  run_or_die("cd " + dir + " && " + tools + "/ca_creds --cn bench-root" + subj + "ec");
  for (const char* kind : {"ec", "rsa"}) {
    fs::create_directory(dir + "/" + kind);
    run_or_die("cd " + dir + "/" + kind + " && " + tools + "/ca_creds --issuing --cn bench-" +
               kind + " --ca-key ../ca.key --ca-crt ../ca.crt" + subj + kind);
  }
  std::vector<std::string> csrs;
  {
    pki::Random rng("provision_bench");
    for (size_t i = 0; i < pool_n; ++i) {
      pki::PrivateKey key;
      pki::PrivateKey::generate(key, pki::KeySpec{pki::KeyType::kEc, 0}, rng);
      csrs.push_back(pki::make_csr_pem(key, "dev-" + std::to_string(i), {}, rng));
    }
  }
  std::printf("%-9s %7s %8s %9s %8s %9s %8s  (median of %d runs by wall time; each run's certs/s)\n",
              "issuing", "threads", "requests", "certs/s", "us/cert", "check us", "sign us", runs);
  for (const char* kind : {"ec", "rsa"}) {
    const std::string d = dir + "/" + kind;
    provision::Signer signer(d + "/issuing.key", d + "/issuing.crt", d + "/issuing-chain.crt");
    const size_t n = std::string(kind) == "ec" ? n_ec : n_rsa;
    if (n == 0) continue;
    run_once(signer, csrs, std::min<size_t>(n, 20), 1);  // warm-up
    for (unsigned threads : thread_counts) {
      std::vector<Run> rs;
      for (int r = 0; r < runs; ++r) rs.push_back(run_once(signer, csrs, n, threads));
      std::string all;
      for (const Run& r : rs) {
        if (!all.empty()) all += ' ';
        all += std::to_string(static_cast<long>(n / r.secs + 0.5));
      }
      std::vector<Run> sorted = rs;
      std::sort(sorted.begin(), sorted.end(),
                [](const Run& a, const Run& b) { return a.secs < b.secs; });
      const Run& med = sorted[sorted.size() / 2];
      std::printf("%-9s %7u %8zu %9.0f %8.1f %9.1f %8.1f  (%s)\n",
                  std::string(kind) == "ec" ? "EC P-256" : "RSA-2048", threads, n, n / med.secs,
                  med.secs * 1e6 / n, med.check_us, med.sign_us, all.c_str());
      std::fflush(stdout);
    }
  }
  fs::remove_all(dir);
  return 0;
}
