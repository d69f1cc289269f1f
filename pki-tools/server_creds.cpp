// server_creds: the broker's key and certificate, server.key and server.crt, signed by the
// CA (docs/pki-tools.md).
#include "cli.hpp"
#include "error.hpp"
#include "issue.hpp"
#include "names.hpp"

using namespace mqgate::pki;

namespace {

void add_unique(std::vector<AltName>& names, AltName name) {
  for (const AltName& n : names) {
    if (n == name) return;
  }
  names.push_back(std::move(name));
}

}  // namespace

int main(int argc, char** argv) {
  return run_tool("server_creds", argc, argv, [](int argc, char** argv) {
    CommandLine cl("server_creds",
                   "Generate a key and certificate for the broker in pem format, signed by the "
                   "provided CA credentials. With a key size of 2048 and a 1-year expiration.");
    cl.option("country", "x509 'country_name' attribute [required]");
    cl.option("org-name", "x509 'organization_name' attribute [required]");
    cl.option("cn",
              "x509 'common_name' attribute; also the certificate's DNS (or IP) subject "
              "alternative name [required]");
    add_output_options(cl);
    add_ca_options(cl);
    cl.repeatable("san-dns", "extra DNS subject alternative name (repeatable)");
    cl.repeatable("san-ip", "extra IP address subject alternative name (repeatable)", "ADDRESS");
    add_key_options(cl);
    add_days_option(cl, 365);
    cl.parse(argc, argv);

    CredentialRequest req;
    req.profile = Profile::kServer;
    std::string country = normalize_country("--country", cl.required("country"));
    std::string org = cl.required("org-name");
    std::string cn = cl.required("cn");
    check_dn_text("--org-name", org, 64);
    check_dn_text("--cn", cn, 64);

    // The CN names the server: a DNS name, or an IP address for IP-only deployments.
    if (Bytes ip = parse_ip_address(cn); !ip.empty()) {
      add_unique(req.alt_names, AltName::ip_address(std::move(ip)));
    } else if (is_dns_name(cn, true)) {
      add_unique(req.alt_names, AltName::dns(normalize_dns_name("--cn", cn, true)));
    } else {
      throw UsageError("--cn '" + cn +
                       "' is neither a DNS name nor an IP address (it becomes the certificate's "
                       "subject alternative name)");
    }
    for (const std::string& name : cl.values("san-dns")) {
      add_unique(req.alt_names, AltName::dns(normalize_dns_name("--san-dns", name, true)));
    }
    add_unique(req.alt_names, AltName::ip_address(parse_ip_address("127.0.0.1")));
    for (const std::string& text : cl.values("san-ip")) {
      Bytes ip = parse_ip_address(text);
      if (ip.empty()) throw UsageError("--san-ip '" + text + "' is not an IPv4 or IPv6 address");
      add_unique(req.alt_names, AltName::ip_address(std::move(ip)));
    }

    req.subject.add_country(country);
    req.subject.add_organization(org);
    req.subject.add_common_name(cn);
    req.key = key_spec(cl);
    req.days = validity_days(cl, 365);
    req.output_dir = cl.value_or("output-dir", ".");
    req.force = cl.is_set("force");
    req.ca_key_path = cl.value_or("ca-key", "ca.key");
    req.ca_crt_path = cl.value_or("ca-crt", "ca.crt");
    req.base_name = "server";
    make_credentials(req);
  });
}
