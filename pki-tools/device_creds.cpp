// device_creds: one device's key and certificate, <device-id>.key and <device-id>.crt,
// signed by the CA, with the SPIFFE URI the certificate-auth plugin checks; or a claim
// certificate for a batch of devices (--claim); or a device key and a certificate
// signing request, without a CA (--csr) (docs/pki-tools.md, docs/provisioning.md).
#include <mbedtls/platform_util.h>

#include <cstdio>

#include "cli.hpp"
#include "csr.hpp"
#include "error.hpp"
#include "issue.hpp"
#include "names.hpp"
#include "output.hpp"

using namespace mqgate::pki;

namespace {

// --csr: <device-id>.key (0600) and <device-id>.csr (0644). The issuer sets the subject
// and names itself, so only the id (and the URI, as a hint) go into the request.
void make_key_and_csr(const CommandLine& cl, const std::string& device_id) {
  for (const char* name : {"country", "org-name", "ca-key", "ca-crt", "days"}) {
    if (cl.has(name)) {
      throw UsageError(std::string("--") + name +
                       " does not go with --csr (the issuer decides the certificate's contents)");
    }
  }
  std::vector<AltName> hint;
  if (cl.has("uri")) {
    const std::string domain = normalize_dns_name("--uri", cl.required("uri"), false);
    hint.push_back(AltName::uri("spiffe://" + domain + "/device/" + device_id));
  }
  const std::string dir = cl.value_or("output-dir", ".");
  OutputSet out(cl.is_set("force"));
  out.create_directory(dir);
  const size_t key_file = out.add(join_path(dir, device_id + ".key"), 0600);
  const size_t csr_file = out.add(join_path(dir, device_id + ".csr"), 0644);

  Random rng("mqgate device_creds --csr");
  PrivateKey key;
  PrivateKey::generate(key, key_spec(cl), rng);
  const std::string csr = make_csr_pem(key, device_id, hint, rng);
  std::string key_pem = key.to_pem();
  out.write(key_file, key_pem);
  mbedtls_platform_zeroize(key_pem.data(), key_pem.size());
  out.write(csr_file, csr);
  out.commit();
  std::printf("wrote %s (%s private key, mode 0600)\n", out.path(key_file).c_str(),
              key.describe().c_str());
  std::printf("wrote %s (certificate request, CN=%s)\n", out.path(csr_file).c_str(),
              device_id.c_str());
}

}  // namespace

int main(int argc, char** argv) {
  return run_tool("device_creds", argc, argv, [](int argc, char** argv) {
    CommandLine cl("device_creds",
                   "Generate a key and certificate for each device in pem format, signed by the "
                   "provided CA credentials. With a key size of 2048 and a 1-year expiration.");
    cl.option("country", "x509 'country_name' attribute [required]");
    cl.option("org-name", "x509 'organization_name' attribute [required]");
    cl.option("device-id", "device id for the SAN [required]");
    cl.option("uri", "domain name for device SAN [required]");
    cl.option("claim",
              "make a claim certificate for this batch of devices instead (SAN URI "
              "spiffe://<uri>/claim/<batch>): claim-<batch>.key, claim-<batch>.crt",
              "BATCH");
    cl.flag("csr",
            "make <device-id>.key and a certificate signing request <device-id>.csr instead, "
            "without a CA");
    add_output_options(cl);
    add_ca_options(cl);
    add_key_options(cl);
    add_days_option(cl, 365);
    cl.parse(argc, argv);

    if (cl.has("claim") && (cl.has("device-id") || cl.is_set("csr"))) {
      throw UsageError("--claim makes a certificate for a batch: no --device-id or --csr");
    }
    if (cl.is_set("csr")) {
      const std::string device_id = cl.required("device-id");
      check_device_id(device_id);
      make_key_and_csr(cl, device_id);
      return;
    }

    CredentialRequest req;
    req.profile = Profile::kDevice;
    std::string country = normalize_country("--country", cl.required("country"));
    std::string org = cl.required("org-name");
    check_dn_text("--org-name", org, 64);
    std::string domain = cl.required("uri");
    domain = normalize_dns_name("--uri", domain, false);

    // A claim certificate is a device certificate (clientAuth, CA:FALSE) that names a batch,
    // not a device: the broker lets it do nothing but request a device certificate.
    std::string name;
    if (cl.has("claim")) {
      const std::string batch = cl.value_or("claim", "");
      check_claim_batch(batch);
      name = "claim-" + batch;
      req.alt_names.push_back(AltName::uri("spiffe://" + domain + "/claim/" + batch));
    } else {
      name = cl.required("device-id");
      check_device_id(name);
      req.alt_names.push_back(AltName::uri("spiffe://" + domain + "/device/" + name));
      req.alt_names.push_back(AltName::dns(name + ".local"));
    }

    req.subject.add_country(country);
    req.subject.add_organization(org);
    req.subject.add_common_name(name);
    req.key = key_spec(cl);
    req.days = validity_days(cl, 365);
    req.output_dir = cl.value_or("output-dir", ".");
    req.force = cl.is_set("force");
    req.ca_key_path = cl.value_or("ca-key", "ca.key");
    req.ca_crt_path = cl.value_or("ca-crt", "ca.crt");
    req.base_name = name;
    make_credentials(req);
  });
}
