// device_creds: one device's key and certificate, <device-id>.key and <device-id>.crt,
// signed by the CA, with the SPIFFE URI the certificate-auth plugin checks
// (docs/pki-tools.md).
#include "cli.hpp"
#include "issue.hpp"
#include "names.hpp"

using namespace mqgate::pki;

int main(int argc, char** argv) {
  return run_tool("device_creds", argc, argv, [](int argc, char** argv) {
    CommandLine cl("device_creds",
                   "Generate a key and certificate for each device in pem format, signed by the "
                   "provided CA credentials. With a key size of 2048 and a 1-year expiration.");
    cl.option("country", "x509 'country_name' attribute [required]");
    cl.option("org-name", "x509 'organization_name' attribute [required]");
    cl.option("device-id", "device id for the SAN [required]");
    cl.option("uri", "domain name for device SAN [required]");
    add_output_options(cl);
    add_ca_options(cl);
    add_key_options(cl);
    add_days_option(cl, 365);
    cl.parse(argc, argv);

    CredentialRequest req;
    req.profile = Profile::kDevice;
    std::string country = normalize_country("--country", cl.required("country"));
    std::string org = cl.required("org-name");
    std::string device_id = cl.required("device-id");
    std::string domain = cl.required("uri");
    check_dn_text("--org-name", org, 64);
    check_device_id(device_id);
    domain = normalize_dns_name("--uri", domain, false);

    req.subject.add_country(country);
    req.subject.add_organization(org);
    req.subject.add_common_name(device_id);
    req.alt_names.push_back(AltName::uri("spiffe://" + domain + "/device/" + device_id));
    req.alt_names.push_back(AltName::dns(device_id + ".local"));
    req.key = key_spec(cl);
    req.days = validity_days(cl, 365);
    req.output_dir = cl.value_or("output-dir", ".");
    req.force = cl.is_set("force");
    req.ca_key_path = cl.value_or("ca-key", "ca.key");
    req.ca_crt_path = cl.value_or("ca-crt", "ca.crt");
    req.base_name = device_id;
    make_credentials(req);
  });
}
