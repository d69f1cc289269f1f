// ca_creds: a self-signed root CA, ca.key and ca.crt; or, with --issuing, an issuing
// (intermediate) CA signed by the root: issuing.key, issuing.crt and issuing-chain.crt
// (docs/pki-tools.md).
#include "cli.hpp"
#include "error.hpp"
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
    cl.flag("issuing",
            "make an issuing (intermediate) CA signed by --ca-key/--ca-crt instead of a root: "
            "issuing.key, issuing.crt, issuing-chain.crt");
    add_output_options(cl);
    cl.option("ca-key", "with --issuing: root key filename used for signing. [default: ca.key]");
    cl.option("ca-crt", "with --issuing: root cert filename used for signing. [default: ca.crt]");
    add_key_options(cl);
    add_days_option(cl, 365);
    cl.parse(argc, argv);

    CredentialRequest req;
    const bool issuing = cl.is_set("issuing");
    req.profile = issuing ? Profile::kIssuingCa : Profile::kRootCa;
    if (!issuing && (cl.has("ca-key") || cl.has("ca-crt"))) {
      throw UsageError("--ca-key and --ca-crt go with --issuing (a root CA signs itself)");
    }
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
    req.base_name = issuing ? "issuing" : "ca";
    if (issuing) {
      req.ca_key_path = cl.value_or("ca-key", "ca.key");
      req.ca_crt_path = cl.value_or("ca-crt", "ca.crt");
      req.write_chain = true;
    }
    make_credentials(req);
  });
}
