#include "console/console.hpp"

#include <mbedtls/x509_crt.h>

#include <algorithm>
#include <chrono>
#include <exception>

#include "base/log.hpp"
#include "client/client.hpp"
#include "console/assets.hpp"
#include "console/clients.hpp"
#include "console/json.hpp"
#include "console/throttle.hpp"
#include "pki-tools/crl_update.hpp"
#include "pki-tools/issuer.hpp"
#include "pki-tools/output.hpp"

extern "C" {
#include "passwd/pwfile.h"
}

namespace mqgate::console {

namespace {

constexpr const char* kCookie = "mqgate_console";
// Over HTTPS: a __Host- cookie is Secure, has Path=/ and no Domain, so neither a plain
// HTTP page nor a sibling host can set or shadow it.
constexpr const char* kHostCookie = "__Host-mqgate_console";

std::vector<std::string> json_headers() {
  return {"Cache-Control: no-store", "X-Content-Type-Options: nosniff"};
}

// The value of cookie `name` in the request's Cookie headers, or "".
std::string cookie_value(const http::Request& request, std::string_view name) {
  for (std::string_view header : request.values("cookie")) {
    while (!header.empty()) {
      const size_t semi = header.find(';');
      std::string_view pair = header.substr(0, semi);
      header = semi == std::string_view::npos ? std::string_view() : header.substr(semi + 1);
      while (!pair.empty() && pair.front() == ' ')
        pair.remove_prefix(1);
      const size_t eq = pair.find('=');
      if (eq != std::string_view::npos && pair.substr(0, eq) == name)
        return std::string(pair.substr(eq + 1));
    }
  }
  return {};
}

int64_t wall_now_ms() {
  using namespace std::chrono;
  return duration_cast<milliseconds>(system_clock::now().time_since_epoch()).count();
}

bool state_changing(const std::string& method) {
  return method != "GET" && method != "HEAD";
}

CertRoles cert_roles_of(const HttpConfig& config) {
  CertRoles roles;
  roles.admins.insert(config.console_cert_admins.begin(), config.console_cert_admins.end());
  roles.readers.insert(config.console_cert_readers.begin(), config.console_cert_readers.end());
  return roles;
}

}  // namespace

struct Console::Call {
  const http::Request& request;
  std::string peer;
  http::Reply reply;
  const TlsPeerInfo* tls = nullptr;  // over HTTPS: what the client's certificate proved

  void send(int status, const Json& body, std::vector<std::string> extra = {}) {
    std::vector<std::string> headers = json_headers();
    headers.insert(headers.end(), extra.begin(), extra.end());
    reply(status, http::response(status, "application/json", body.text() + "\n", headers));
  }
  void error(int status, std::string_view message, std::vector<std::string> extra = {}) {
    Json j;
    j.begin_object().field("error", message).end_object();
    send(status, j, std::move(extra));
  }
};

struct Console::ListJob {
  ListWalk walk;
  std::string peer;
  http::Reply reply;
};

Console::Console(uv_loop_t* loop, Host& host, const HttpConfig& config, Users users)
    : loop_(loop),
      host_(host),
      https_(config.tls.has_value()),
      token_(config.token),
      users_(std::move(users)),
      cert_roles_(cert_roles_of(config)) {
  pki::leave_signals_alone();        // the broker's loop handles SIGINT/SIGTERM/SIGHUP
  uv_idle_init(loop_, &list_idle_);  // cannot fail
  list_idle_.data = this;
  list_idle_open_ = true;
}

Console::~Console() {
  stop();
}

void Console::stop() {
  lists_.clear();
  if (!list_idle_open_) return;
  list_idle_open_ = false;
  auto* h = reinterpret_cast<uv_handle_t*>(&list_idle_);
  if (!uv_is_closing(h)) uv_close(h, nullptr);
}

void Console::start_list(Call& call, ListQuery q) {
  if (lists_.size() + lists_sorting_ >= kMaxLists || !list_idle_open_) {
    call.error(429, "too many device lists under way; try again", {"Retry-After: 1"});
    return;
  }
  auto job = std::make_unique<ListJob>();
  job->walk.q = std::move(q);
  job->walk.layout = host_.console_broker().sessions().layout();
  job->peer = call.peer;
  job->reply = std::move(call.reply);
  lists_.push_back(std::move(job));
  uv_idle_start(&list_idle_, on_list_idle);
}

void Console::on_list_idle(uv_idle_t* idle) {
  auto* self = static_cast<Console*>(idle->data);
  if (self->lists_.empty()) {
    uv_idle_stop(idle);
    return;
  }
  ListJob& job = *self->lists_.front();
  if (!walk_clients(self->host_.console_broker().sessions(), job.walk, kListSliceBudget))
    return;  // more next iteration
  std::unique_ptr<ListJob> done = std::move(self->lists_.front());
  self->lists_.pop_front();
  if (self->lists_.empty()) uv_idle_stop(idle);
  self->sort_list(std::move(done));
}

void Console::sort_list(std::unique_ptr<ListJob> job) {
  struct Work {
    uv_work_t req;
    std::weak_ptr<Console*> alive;
    std::unique_ptr<ListJob> job;
  };
  auto work = std::make_unique<Work>();
  work->alive = alive_;
  work->job = std::move(job);
  work->req.data = work.get();
  const int rc = uv_queue_work(
      loop_, &work->req,
      [](uv_work_t* req) { sort_page(static_cast<Work*>(req->data)->job->walk); },
      [](uv_work_t* req, int) {
        std::unique_ptr<Work> w(static_cast<Work*>(req->data));
        auto self = w->alive.lock();
        if (!self) return;
        (*self)->lists_sorting_--;
        (*self)->answer_list(*w->job);
      });
  if (rc != 0) {  // no thread pool: sort here (bounded by the sessions, as before)
    sort_page(work->job->walk);
    answer_list(*work->job);
    return;
  }
  work.release();
  lists_sorting_++;
}

void Console::answer_list(ListJob& job) {
  const http::Request none{};
  Call call{none, job.peer, std::move(job.reply)};
  Json j;
  j.begin_object();
  write_page(host_.console_broker(), job.walk, Clock{host_.console_now_ms(), wall_now_ms()}, j);
  j.end_object();
  call.send(200, j);
}

void Console::reload(const HttpConfig& config, Users users) {
  token_ = config.token;
  users_ = std::move(users);
  cert_roles_ = cert_roles_of(config);
  LOG_INFO("console: reloaded (%s, %zu admin%s)", users_.file ? "with users" : "token only",
           users_.admins.size(), users_.admins.size() == 1 ? "" : "s");
}

void Console::audit(const Call& call, const Caller& caller, const char* action,
                    std::string_view target, const std::string& outcome) {
  LOG_INFO("console: %s (%s) from %s: %s %s: %s", caller.who.c_str(), role_name(caller.role),
           call.peer.c_str(), action, log::quote(target, 128).c_str(), outcome.c_str());
}

const char* Console::cookie_name() const {
  return https_ ? kHostCookie : kCookie;
}

std::string Console::cookie_attributes() const {
  return std::string("; Path=/; HttpOnly; SameSite=Strict") + (https_ ? "; Secure" : "");
}

void Console::handle(const http::Request& request, const std::string& peer, const TlsPeerInfo* tls,
                     http::Reply reply) {
  Call call{request, peer, std::move(reply), tls};
  const std::string& path = request.path;
  if (path == "/console" || path.starts_with("/console/")) {
    assets(call);
    return;
  }
  static constexpr std::string_view kPrefix = "/api/v1/";
  if (!path.starts_with(kPrefix)) {
    call.error(404, "unknown API version (expected /api/v1/)");
    return;
  }
  const std::string_view route = std::string_view(path).substr(kPrefix.size());
  const std::string& method = request.method;
  if (route == "login") {
    if (method != "POST") {
      call.error(405, "POST with Authorization: Basic", {"Allow: POST"});
      return;
    }
    login(call);
    return;
  }
  Caller caller;
  if (!authenticate(call, caller)) return;
  if (route == "session") {
    if (method != "GET") {
      call.error(405, "GET only", {"Allow: GET"});
      return;
    }
    Json j;
    j.begin_object().field("user", caller.who).field("role", role_name(caller.role));
    if (!caller.csrf.empty()) j.field("csrf", caller.csrf);
    j.end_object();
    call.send(200, j);
  } else if (route == "logout") {
    if (method != "POST") {
      call.error(405, "POST only", {"Allow: POST"});
      return;
    }
    logout(call, caller);
  } else if (route == "broker") {
    if (method != "GET") {
      call.error(405, "GET only", {"Allow: GET"});
      return;
    }
    broker(call);
  } else if (route == "clients" || route.starts_with("clients/")) {
    clients(call, route.substr(std::min<size_t>(route.size(), 8)), caller);
  } else if (route.starts_with("sessions/")) {
    std::string id;
    if (!percent_decode(route.substr(9), false, id)) {
      call.error(400, "bad percent-encoding in the client id");
      return;
    }
    if (method != "DELETE") {
      call.error(405, "DELETE only", {"Allow: DELETE"});
      return;
    }
    delete_session(call, id, caller);
  } else {
    call.error(404, "no such API call");
  }
}

bool Console::authenticate(Call& call, Caller& caller) {
  const http::Request& request = call.request;
  if (const std::string* auth = request.header("authorization")) {
    // Token guesses are throttled as password guesses are (the token is an admin's key).
    const std::string address = throttle_key(address_of(call.peer));
    const uint64_t now = host_.console_now_ms();
    if (const uint64_t wait = throttle_.wait_s(address, now)) {
      call.error(429, "too many failed logins from this address; try again later",
                 {"Retry-After: " + std::to_string(wait)});
      return false;
    }
    if (!token_.empty() && http::bearer_matches(auth, token_)) {
      throttle_.succeeded(address, "token");
      caller.who = "token";
      caller.role = Role::kAdmin;
      return true;  // not an ambient credential: a browser never sends it by itself
    }
    if (throttle_.first_said(address, "token", now))
      LOG_WARN(
          "console: bad credentials (Authorization) from %s: counted as a failed login "
          "(said once per address)",
          call.peer.c_str());
    login_failed(call, "token");
    call.error(401, "bad credentials", {"WWW-Authenticate: Bearer realm=\"mqgate\""});
    return false;
  }
  const std::string id = cookie_value(request, cookie_name());
  const LoginSessions::Login* login =
      id.empty() ? nullptr : logins_.find(id, host_.console_now_ms());
  if (login == nullptr) {
    call.error(401,
               id.empty() ? "authentication needed (bearer token or login)"
                          : "the login has ended: log in again",
               {"WWW-Authenticate: Bearer realm=\"mqgate\""});
    return false;
  }
  // A user dropped from the password file (an identity from the certificate lists) on
  // reload loses the login; a role change applies.
  std::optional<Role> role;
  if (login->by_certificate) {
    // Each call presents the login's certificate again (each HTTPS request is a handshake
    // of its own, which checks it against the current CRL): a revoked or another
    // certificate, or none, ends the login.
    const bool same_certificate =
        call.tls != nullptr && !call.tls->chain_der.empty() &&
        http::equal_secret(certificate_fingerprint(call.tls->chain_der.front()),
                           login->fingerprint);
    std::string matched;
    if (same_certificate)
      role = cert_roles_.role_of({login->user}, matched);
    else
      LOG_WARN(
          "console: certificate %s from %s: the call does not present the login's "
          "certificate: the login ends",
          log::quote(login->user, 128).c_str(), call.peer.c_str());
  } else if (users_.file &&
             pwfile_find(users_.file.get(), login->user.c_str()) != static_cast<size_t>(-1)) {
    role = users_.role_of(login->user);
  }
  if (!role) {
    logins_.remove(id);
    call.error(401, "the login has ended: log in again");
    return false;
  }
  caller.who = (login->by_certificate ? "certificate " : "user ") + login->user;
  caller.role = *role;
  caller.session_id = id;
  caller.csrf = login->csrf;
  if (state_changing(request.method)) {
    const std::string* csrf = request.header("x-csrf-token");
    if (csrf == nullptr || !http::equal_secret(*csrf, login->csrf)) {
      LOG_WARN("console: %s from %s: %s %s refused: missing or wrong X-CSRF-Token",
               caller.who.c_str(), call.peer.c_str(), request.method.c_str(),
               log::quote(request.path, 128).c_str());
      call.error(403, "missing or wrong X-CSRF-Token header");
      return false;
    }
  }
  return true;
}

void Console::login(Call& call) {
  const std::string address = throttle_key(address_of(call.peer));
  if (const uint64_t wait = throttle_.wait_s(address, host_.console_now_ms())) {
    call.error(429, "too many failed logins from this address; try again later",
               {"Retry-After: " + std::to_string(wait)});
    return;
  }
  const std::string* auth = call.request.header("authorization");
  if (auth == nullptr && call.tls != nullptr && !call.tls->chain_der.empty()) {
    login_with_certificate(call);
    return;
  }
  std::string user, password;
  if (auth == nullptr || !parse_basic(*auth, user, password)) {
    call.error(401, "log in with Authorization: Basic base64(user:password)");
    return;
  }
  if (!users_.file) {
    call.error(403, "no console users are configured (http.console_users)");
    return;
  }
  if (logins_in_flight_ >= kMaxLoginsInFlight) {
    call.error(429, "too many logins at once; try again", {"Retry-After: 1"});
    return;
  }
  struct Work {
    uv_work_t req;
    std::weak_ptr<Console*> alive;
    std::shared_ptr<const pwfile> file;
    std::string user, password, peer, address;
    http::Reply reply;
    bool ok = false;
  };
  auto work = std::make_unique<Work>();
  work->alive = alive_;
  work->file = users_.file;
  work->user = std::move(user);
  work->password = std::move(password);
  work->peer = call.peer;
  work->reply = std::move(call.reply);
  work->address = address;
  work->req.data = work.get();
  const int rc = uv_queue_work(
      loop_, &work->req,
      [](uv_work_t* req) {
        auto* w = static_cast<Work*>(req->data);
        w->ok = verify_password(*w->file, w->user, w->password);
        std::fill(w->password.begin(), w->password.end(), '\0');
      },
      [](uv_work_t* req, int) {
        std::unique_ptr<Work> w(static_cast<Work*>(req->data));
        auto self = w->alive.lock();
        if (!self) return;
        Console& c = **self;
        c.logins_in_flight_--;
        c.throttle_.finished(w->address);
        const http::Request none{};
        Call call{none, w->peer, std::move(w->reply)};
        if (!w->ok) {
          LOG_WARN("console: login of user %s from %s refused: bad user or password",
                   log::quote(w->user, 64).c_str(), w->peer.c_str());
          c.login_failed(call, "user:" + w->user);
          call.error(401, "bad user or password");
          return;
        }
        c.logged_in(call, w->user, false, c.users_.role_of(w->user));
      });
  if (rc != 0) {
    call.reply = std::move(work->reply);
    call.error(503, "cannot check the password now");
    return;
  }
  work.release();
  logins_in_flight_++;
  throttle_.started(address, host_.console_now_ms());
}

void Console::login_with_certificate(Call& call) {
  // Verified against [http]'s cafile (and CRL) in the handshake: what is left is whether
  // it names a console user. Parsing the leaf is quick (no signature to check).
  std::vector<std::string> ids;
  std::string subject, matched;
  std::optional<Role> role;
  if (certificate_identities(call.tls->chain_der.front(), ids, subject))
    role = cert_roles_.role_of(ids, matched);
  if (!role) {
    LOG_WARN(
        "console: certificate login from %s refused: %s is not in console_cert_admins or "
        "console_cert_readers",
        call.peer.c_str(), log::quote(subject, 256).c_str());
    login_failed(call, "certificate");
    call.error(403, "this certificate is not a console user");
    return;
  }
  logged_in(call, matched, true, *role);
}

void Console::login_failed(const Call& call, const std::string& name) {
  const std::string address = throttle_key(address_of(call.peer));
  if (throttle_.failed(address, name, host_.console_now_ms()))
    LOG_WARN(
        "console: %u failed logins from %s: its next tries wait (429), %llu s doubling up "
        "to %llu s, until 30 minutes pass without a failure",
        LoginThrottle::kFreeFailures, address.c_str(),
        static_cast<unsigned long long>(LoginThrottle::kBaseDelayMs / 1000),
        static_cast<unsigned long long>(LoginThrottle::kMaxDelayMs / 1000));
}

void Console::logged_in(Call& call, const std::string& user, bool by_certificate, Role role) {
  // Only this name's failures are forgiven: others' guesses from the address still count.
  throttle_.succeeded(throttle_key(address_of(call.peer)),
                      by_certificate ? std::string("certificate") : "user:" + user);
  std::string id;
  const auto& login = logins_.create(
      user, by_certificate, role, host_.console_now_ms(), id,
      by_certificate ? certificate_fingerprint(call.tls->chain_der.front()) : std::string());
  const char* kind = by_certificate ? "certificate " : "user ";
  LOG_INFO("console: %s%s (%s) logged in from %s", kind, log::quote(user, 128).c_str(),
           role_name(role), call.peer.c_str());
  Json j;
  j.begin_object()
      .field("user", kind + user)
      .field("role", role_name(role))
      .field("csrf", login.csrf)
      .end_object();
  // Secure over HTTPS; plain HTTP is served on loopback binds only.
  call.send(200, j,
            {std::string("Set-Cookie: ") + cookie_name() + "=" + id + cookie_attributes() +
             "; Max-Age=" + std::to_string(LoginSessions::kLifetimeMs / 1000)});
}

void Console::logout(Call& call, const Caller& caller) {
  if (!caller.session_id.empty()) logins_.remove(caller.session_id);
  LOG_INFO("console: %s logged out from %s", caller.who.c_str(), call.peer.c_str());
  Json j;
  j.begin_object().field("logged_out", true).end_object();
  call.send(
      200, j,
      {std::string("Set-Cookie: ") + cookie_name() + "=" + cookie_attributes() + "; Max-Age=0"});
}

void Console::clients(Call& call, std::string_view rest, const Caller& caller) {
  const std::string& method = call.request.method;
  const Clock clock{host_.console_now_ms(), wall_now_ms()};
  if (rest.empty()) {
    if (method != "GET") {
      call.error(405, "GET only", {"Allow: GET"});
      return;
    }
    ListQuery q;
    std::string why;
    if (!parse_list_query(call.request.query, q, why)) {
      call.error(400, why);
      return;
    }
    start_list(call, std::move(q));
    return;
  }
  const size_t slash = rest.find('/');
  std::string id;
  if (!percent_decode(rest.substr(0, slash), false, id)) {
    call.error(400, "bad percent-encoding in the client id");
    return;
  }
  const std::string_view action =
      slash == std::string_view::npos ? std::string_view() : rest.substr(slash + 1);
  if (action.empty()) {
    if (method != "GET") {
      call.error(405, "GET only", {"Allow: GET"});
      return;
    }
    Json j;
    j.begin_object();
    if (!write_client_detail(host_.console_broker(), id, clock, j)) {
      call.error(404, "no such client or session");
      return;
    }
    j.end_object();
    call.send(200, j);
    return;
  }
  if (action != "disconnect" && action != "revoke") {
    call.error(404, "no such API call (disconnect or revoke)");
    return;
  }
  if (method != "POST") {
    call.error(405, "POST only", {"Allow: POST"});
    return;
  }
  if (caller.role != Role::kAdmin) {
    audit(call, caller, action == "revoke" ? "revoke" : "disconnect", id, "refused: read-only");
    call.error(403, "admin role needed");
    return;
  }
  if (action == "disconnect")
    disconnect(call, id, caller);
  else
    revoke(call, id, caller);
}

void Console::disconnect(Call& call, const std::string& id, const Caller& caller) {
  Session* s = host_.console_broker().sessions().find(id);
  Client* client = s ? s->client() : nullptr;
  if (client == nullptr || client->close_requested()) {
    audit(call, caller, "disconnect", id, "not connected");
    call.error(404, "no such connected client");
    return;
  }
  const std::string peer = client->peer();
  audit(call, caller, "disconnect", id, "disconnected (peer " + peer + ")");
  host_.console_disconnect(*client, "disconnected from the console");
  Json j;
  j.begin_object().field("disconnected", id).field("peer", peer).end_object();
  call.send(200, j);
}

void Console::delete_session(Call& call, const std::string& id, const Caller& caller) {
  if (caller.role != Role::kAdmin) {
    audit(call, caller, "delete session", id, "refused: read-only");
    call.error(403, "admin role needed");
    return;
  }
  Session* s = host_.console_broker().sessions().find(id);
  if (s != nullptr && s->client() != nullptr) {
    audit(call, caller, "delete session", id, "refused: the client is connected");
    call.error(409, "the client is connected: disconnect it first");
    return;
  }
  if (!host_.console_broker().remove_offline_session(id, caller.who)) {
    audit(call, caller, "delete session", id, "no such offline session");
    call.error(404, "no such offline persistent session");
    return;
  }
  audit(call, caller, "delete session", id, "deleted");
  Json j;
  j.begin_object().field("deleted", id).end_object();
  call.send(200, j);
}

void Console::revoke(Call& call, const std::string& id, const Caller& caller) {
  Session* s = host_.console_broker().sessions().find(id);
  const Client* client = s ? s->client() : nullptr;
  const TlsPeerInfo* tls = client ? client->tls() : nullptr;
  // The certificate a connected device presents, or the one an offline session's client
  // last connected with (kept with the session), and the listener whose CRL lists it.
  std::string leaf_der, issuer_raw, serial_raw, listener_name;
  if (tls != nullptr && !tls->chain_der.empty()) {
    leaf_der = tls->chain_der.front();
    issuer_raw = tls->issuer_raw;
    serial_raw = tls->serial_raw;
    listener_name = client->listener() ? client->listener()->name : "?";
  } else if (client == nullptr && s != nullptr && s->certificate() &&
             !s->certificate()->certificates().empty()) {
    const SessionCertificate& kept = *s->certificate();
    leaf_der = kept.certificates().front();
    issuer_raw = kept.issuer_raw;
    serial_raw = kept.serial_raw;
    listener_name = kept.listener;
  } else {
    audit(call, caller, "revoke", id, "refused: no client certificate");
    call.error(409,
               "no certificate to revoke: the client is not connected with one, nor an offline "
               "session whose client last connected with one");
    return;
  }
  const ListenerConfig* listener = nullptr;
  for (const ListenerConfig& l : host_.console_config().listeners)
    if (l.name == listener_name) listener = &l;
  if (client != nullptr && client->listener() != nullptr) listener = client->listener();
  if (listener == nullptr || !listener->tls || listener->tls->crl_ca_keyfile.empty()) {
    const std::string name = listener ? listener->name : listener_name;
    audit(call, caller, "revoke", id, "refused: listener " + name + " has no crl_ca_keyfile");
    call.error(409, "listener \"" + name +
                        "\" has no crl_ca_certfile/crl_ca_keyfile to sign its CRL with");
    return;
  }
  struct Work {
    uv_work_t req;
    std::weak_ptr<Console*> alive;
    std::string ca_cert, ca_key, crl, listener, leaf_der, issuer_raw, serial_raw;
    std::string id, peer;
    Caller caller;
    http::Reply reply;
    pki::CrlUpdate update;
    std::string error;
  };
  auto work = std::make_unique<Work>();
  work->alive = alive_;
  work->ca_cert = listener->tls->crl_ca_certfile;
  work->ca_key = listener->tls->crl_ca_keyfile;
  work->crl = listener->tls->crlfile;
  work->listener = listener->name;
  work->leaf_der = std::move(leaf_der);
  work->issuer_raw = std::move(issuer_raw);
  work->serial_raw = std::move(serial_raw);
  work->id = id;
  work->peer = call.peer;
  work->caller = caller;
  work->reply = std::move(call.reply);
  work->req.data = work.get();
  const int rc = uv_queue_work(
      loop_, &work->req,
      [](uv_work_t* req) {  // on a thread: files and signing only
        auto* w = static_cast<Work*>(req->data);
        try {
          pki::IssuingCa ca(w->ca_key, w->ca_cert, pki::CaUse::kSignCrls);
          mbedtls_x509_crt leaf;
          mbedtls_x509_crt_init(&leaf);
          const bool parsed = mbedtls_x509_crt_parse_der(
                                  &leaf, reinterpret_cast<const unsigned char*>(w->leaf_der.data()),
                                  w->leaf_der.size()) == 0;
          const bool issued = parsed && ca.issued(leaf);
          mbedtls_x509_crt_free(&leaf);
          if (!issued) {
            w->error = "the certificate was not issued by " + w->ca_cert;
            return;
          }
          const pki::Bytes serial(w->serial_raw.begin(), w->serial_raw.end());
          w->update = pki::update_crl(ca, w->crl, {serial}, kCrlDays, false, "mqgate console");
        } catch (const std::exception& e) {
          w->error = e.what();
        }
      },
      [](uv_work_t* req, int) {
        std::shared_ptr<Work> w(static_cast<Work*>(req->data));
        auto self = w->alive.lock();
        if (!self) return;
        Console& c = **self;
        const http::Request none{};
        if (!w->error.empty()) {
          Call call{none, w->peer, std::move(w->reply)};
          c.audit(call, w->caller, "revoke", w->id, "failed: " + w->error);
          call.error(500, "revocation failed: " + w->error);
          return;
        }
        // The CRL is on disk: the listener loads it, then every connection with that
        // certificate goes (the new CRL refuses it from then on).
        std::weak_ptr<Console*> alive = self;
        c.host_.reload_listener_tls(w->listener, [w, alive](bool ok) {
          auto self2 = alive.lock();
          if (!self2) return;
          Console& c2 = **self2;
          const size_t closed = c2.host_.disconnect_certificate(
              w->issuer_raw, w->serial_raw, "certificate revoked from the console");
          const http::Request none2{};
          Call call{none2, w->peer, std::move(w->reply)};
          const std::string serial =
              w->update.revoked.empty() ? w->update.already.front() : w->update.revoked.front();
          c2.audit(call, w->caller, "revoke", w->id,
                   "serial " + serial + (w->update.revoked.empty() ? " already" : "") + " in " +
                       w->crl + ", listener reloaded " + (ok ? "yes" : "NO") + ", " +
                       std::to_string(closed) + " connection(s) closed");
          Json j;
          j.begin_object()
              .field("client_id", w->id)
              .field("serial", serial)
              .field("already_revoked", w->update.revoked.empty())
              .field("crl", w->crl)
              .field("crl_entries", uint64_t{w->update.entries})
              .field("crl_written", w->update.written);
          if (w->update.written)
            j.field("crl_number", w->update.number)
                .field("next_update", iso_time(static_cast<int64_t>(w->update.next_update)));
          j.field("listener", w->listener)
              .field("listener_reloaded", ok)
              .field("disconnected", uint64_t{closed})
              .end_object();
          call.send(ok ? 200 : 500, j);
        });
      });
  if (rc != 0) {
    call.reply = std::move(work->reply);
    call.error(503, "cannot start the revocation now");
    return;
  }
  work.release();
}

void Console::broker(Call& call) {
  Json j;
  j.begin_object();
  host_.write_broker(j);
  j.end_object();
  call.send(200, j);
}

void Console::assets(Call& call) {
  const http::Request& request = call.request;
  if (request.method != "GET" && request.method != "HEAD") {
    call.error(405, "GET only", {"Allow: GET"});
    return;
  }
  std::string_view name = request.path;
  if (name == "/console") {
    call.reply(301, http::response(301, "text/plain; charset=utf-8", "see /console/\n",
                                   {"Location: /console/"}));
    return;
  }
  name.remove_prefix(std::string_view("/console/").size());
  if (name.empty()) name = "index.html";
  const Asset* asset = find_asset(name);
  if (asset == nullptr) {
    call.reply(404, http::response(404, "text/plain; charset=utf-8", "no such file\n"));
    return;
  }
  std::string r = http::response(
      200, asset->content_type, std::string_view(asset->data, asset->size),
      {"Cache-Control: no-cache", "X-Content-Type-Options: nosniff", "X-Frame-Options: DENY",
       "Content-Security-Policy: default-src 'self'; img-src 'self' data:; "
       "frame-ancestors 'none'; base-uri 'none'; form-action 'self'"});
  if (request.method == "HEAD") r.resize(r.find("\r\n\r\n") + 4);
  call.reply(200, std::move(r));
}

}  // namespace mqgate::console
