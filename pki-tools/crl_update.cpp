#include "crl_update.hpp"

#include "crl.hpp"
#include "error.hpp"
#include "output.hpp"
#include "random.hpp"
#include "x509.hpp"

namespace mqgate::pki {

CrlUpdate update_crl(IssuingCa& ca, const std::string& crl_path, const std::vector<Bytes>& serials,
                     unsigned days, bool refresh, const char* personalization) {
  CrlUpdate result;
  DirectoryLock lock(crl_path);
  RevocationList list;
  result.existed = path_exists(crl_path);
  if (result.existed) list.load(crl_path, ca);

  const std::time_t now = std::time(nullptr);
  for (const Bytes& serial : serials) {
    if (list.contains(serial)) {
      result.already.push_back(serial_hex(serial));
      continue;
    }
    list.add(make_crl_entry(serial, now));
    result.revoked.push_back(serial_hex(serial));
  }
  result.entries = list.entries().size();
  if (result.revoked.empty() && !refresh) return result;

  Random rng(personalization);
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

  char number_text[64] = "";
  size_t olen = 0;
  mbedtls_mpi_write_string(number.get(), 10, number_text, sizeof number_text, &olen);
  result.written = true;
  result.number = number_text;
  result.next_update = next_update;
  return result;
}

}  // namespace mqgate::pki
