// revoke_creds: adds certificates to the CA's CRL, creating it if missing, and re-signs it
// (docs/pki-tools.md).
#include <cstdio>
#include <cstring>
#include <ctime>

#include "cli.hpp"
#include "crl.hpp"
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

    DirectoryLock lock(crl_path);
    RevocationList list;
    const bool existed = path_exists(crl_path);
    if (existed) list.load(crl_path, ca);

    const std::time_t now = std::time(nullptr);
    std::vector<std::string> revoked;
    for (size_t i = 0; i < certs.size(); ++i) {
      const mbedtls_x509_crt& crt = certs[i]->get();
      ByteView serial(crt.serial.p, crt.serial.len);
      std::string what = "'" + cert_paths[i] + "' (serial " + serial_hex(serial) + ")";
      if (list.contains(serial)) {
        std::printf("certificate %s is already revoked in %s\n", what.c_str(), crl_path.c_str());
        continue;
      }
      list.add(make_crl_entry(serial, now));
      revoked.push_back(what);
    }
    if (revoked.empty() && !refresh) {
      std::printf("nothing to do: %s is unchanged\n", crl_path.c_str());
      return;
    }

    Random rng("mqgate revoke_creds");
    Mpi number;
    const std::time_t next_update = now + static_cast<std::time_t>(days) * kSecondsPerDay;
    const Bytes der = list.sign(ca, now, next_update, rng, *number.get());

    // The result must parse with mbedTLS (the broker's crlfile) and verify with the CA key.
    ParsedCrl check;
    check.parse_der(der);
    if (!signature_matches(check->tbs, check->sig_md, check->sig_pk, check->sig_opts, check->sig,
                           ca.cert().pk)) {
      throw Error("internal error: the new CRL does not verify");
    }

    OutputSet out(/*overwrite=*/true);
    size_t file = out.add(crl_path, 0644);
    out.write(file, to_pem(der, "X509 CRL"));
    out.commit();

    for (const std::string& what : revoked)
      std::printf("revoked certificate %s\n", what.c_str());
    char number_text[64] = "";
    size_t olen = 0;
    mbedtls_mpi_write_string(number.get(), 10, number_text, sizeof number_text, &olen);
    std::printf("%s %s (CRL number %s, %zu revoked, next update %s)\n",
                existed ? "updated" : "wrote", crl_path.c_str(), number_text, list.entries().size(),
                human_time(next_update).c_str());
  });
}
