// ca_creds: a self-signed root CA, ca.key and ca.crt (docs/pki-tools.md).
#include "cli.hpp"
#include "issue.hpp"
#include "names.hpp"

using namespace mqgate::pki;

int main(int argc, char** argv) {
  return run_tool("ca_creds", argc, argv, [](int argc, char** argv) {
    CommandLine cl("ca_creds",
                   "Generate a self-signed key and certificate to be used as the root CA, with a "
                   "key size of 2048 and a 1-year expiration.");
    cl.option("country", "x509 'country_name' attribute [required]");
    cl.option("state", "x509 'state_or_province_name' attribute [required]");
    cl.option("locality", "x509 'locality_name' attribute [required]");
    cl.option("org-name", "x509 'organization_name' attribute [required]");
    cl.option("cn", "x509 'common_name' attribute [required]");
    add_output_options(cl);
    add_key_options(cl);
    add_days_option(cl, 365);
    cl.parse(argc, argv);

    CredentialRequest req;
    req.profile = Profile::kRootCa;
    std::string country = normalize_country("--country", cl.required("country"));
    std::string state = cl.required("state");
    std::string locality = cl.required("locality");
    std::string org = cl.required("org-name");
    std::string cn = cl.required("cn");
    check_dn_text("--state", state, 128);
    check_dn_text("--locality", locality, 128);
    check_dn_text("--org-name", org, 64);
    check_dn_text("--cn", cn, 64);
    req.subject.add_country(country);
    req.subject.add_state(state);
    req.subject.add_locality(locality);
    req.subject.add_organization(org);
    req.subject.add_common_name(cn);
    req.key = key_spec(cl);
    req.days = validity_days(cl, 365);
    req.output_dir = cl.value_or("output-dir", ".");
    req.force = cl.is_set("force");
    req.base_name = "ca";
    make_credentials(req);
  });
}
