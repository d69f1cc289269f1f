// revoke_creds: adds certificates to the CA's CRL, creating it if missing, and re-signs it
// (docs/pki-tools.md).
#include <algorithm>
#include <cstdio>
#include <cstring>
#include <ctime>

#include "cli.hpp"
#include "crl.hpp"
#include "crl_update.hpp"
#include "error.hpp"
#include "issuer.hpp"
#include "output.hpp"

using namespace mqgate::pki;

namespace {

constexpr unsigned kDefaultCrlDays = 30;

bool same_certificate(const mbedtls_x509_crt& a, const mbedtls_x509_crt& b) {
  return a.raw.len == b.raw.len && std::memcmp(a.raw.p, b.raw.p, a.raw.len) == 0;
}

}  // namespace

int main(int argc, char** argv) {
  return run_tool("revoke_creds", argc, argv, [](int argc, char** argv) {
    CommandLine cl("revoke_creds",
                   "Revoke certificates issued by the CA: add their serials to the CA's "
                   "certificate revocation list (CRL), creating it if missing, and sign it anew.");
    cl.repeatable("cert", "certificate file to revoke (repeatable) [required unless --refresh]",
                  "FILE");
    add_ca_options(cl);
    cl.option("crl", "CRL file to update or create. [default: ca.crl]");
    cl.option("days", "days until the CRL's next update, from 1 to 3650 [default: 30]", "N");
    cl.flag("refresh",
            "re-sign the CRL with new dates and number without revoking anything (creates an "
            "empty CRL if missing)");
    cl.parse(argc, argv);

    const std::vector<std::string> cert_paths = cl.values("cert");
    const bool refresh = cl.is_set("refresh");
    if (cert_paths.empty() && !refresh) {
      throw UsageError("missing required option --cert (or --refresh to re-sign the CRL)");
    }
    const unsigned days = cl.number("days", kDefaultCrlDays, 1, 3650);
    const std::string crl_path = cl.value_or("crl", "ca.crl");
    IssuingCa ca(cl.value_or("ca-key", "ca.key"), cl.value_or("ca-crt", "ca.crt"),
                 CaUse::kSignCrls);

    // Every certificate must be one this CA issued; check all before changing anything.
    std::vector<std::unique_ptr<ParsedCertificate>> certs;
    for (const std::string& path : cert_paths) {
      auto crt = std::make_unique<ParsedCertificate>();
      crt->load(path, "certificate");
      if (same_certificate(crt->get(), ca.cert())) {
        throw Error("certificate '" + path + "' is the CA certificate itself");
      }
      if (!ca.issued(crt->get())) {
        throw Error("certificate '" + path + "' was not issued by CA certificate '" +
                    ca.cert_path() + "'");
      }
      certs.push_back(std::move(crt));
    }

    std::vector<Bytes> serials;
    std::vector<std::string> whats;
    for (size_t i = 0; i < certs.size(); ++i) {
      const mbedtls_x509_crt& crt = certs[i]->get();
      serials.emplace_back(crt.serial.p, crt.serial.p + crt.serial.len);
      whats.push_back("'" + cert_paths[i] + "' (serial " + serial_hex(serials.back()) + ")");
    }
    const CrlUpdate update =
        update_crl(ca, crl_path, serials, days, refresh, "mqgate revoke_creds");
    for (size_t i = 0; i < serials.size(); ++i) {
      const bool added = std::find(update.revoked.begin(), update.revoked.end(),
                                   serial_hex(serials[i])) != update.revoked.end();
      std::printf(added ? "revoked certificate %s\n" : "certificate %s is already revoked in %s\n",
                  whats[i].c_str(), crl_path.c_str());
    }
    if (!update.written) {
      std::printf("nothing to do: %s is unchanged\n", crl_path.c_str());
      return;
    }
    std::printf("%s %s (CRL number %s, %zu revoked, next update %s)\n",
                update.existed ? "updated" : "wrote", crl_path.c_str(), update.number.c_str(),
                update.entries, human_time(update.next_update).c_str());
  });
}
