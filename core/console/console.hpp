// The fleet console (docs/console.md): the JSON API under /api/v1/ on the [http]
// endpoint. It authenticates every call (the bearer token, or a browser login's cookie
// with its CSRF token for state-changing calls), lists and describes devices, and acts
// on them (disconnect, delete an offline session, revoke a certificate), logging each
// action with who did it. Slow work (password hashing, CRL signing) runs on libuv's
// thread pool; the loop only routes and writes JSON.
#pragma once

#include <uv.h>

#include <deque>
#include <memory>
#include <string>

#include "config/config.hpp"
#include "console/auth.hpp"
#include "console/clients.hpp"
#include "console/host.hpp"
#include "console/throttle.hpp"
#include "http/endpoint.hpp"

namespace mqgate::console {

class Console {
 public:
  Console(uv_loop_t* loop, Host& host, const HttpConfig& config, Users users);
  ~Console();
  Console(const Console&) = delete;
  Console& operator=(const Console&) = delete;

  // An /api/ or /console request (http::Endpoint::Callbacks::console); `tls` is null over
  // plain HTTP.
  void handle(const http::Request& request, const std::string& peer, const TlsPeerInfo* tls,
              http::Reply reply);
  // SIGHUP: the new token, users and admins (logins of users no longer listed end).
  void reload(const HttpConfig& config, Users users);
  // Shutdown: closes the loop handle (lists still walking are not answered).
  void stop();

  // Password checks running at once; beyond, logins are answered 429.
  static constexpr int kMaxLoginsInFlight = 4;
  // Days until the nextUpdate of a CRL the console signs.
  static constexpr unsigned kCrlDays = 30;
  // Device lists: sessions walked per loop iteration, and lists under way at once
  // (walking or sorting); beyond, 429.
  static constexpr size_t kListSliceBudget = 2048;
  static constexpr size_t kMaxLists = 4;

 private:
  struct Caller {
    std::string who;  // "token" or "user <name>", for the log
    Role role = Role::kReadOnly;
    std::string session_id;  // a browser login's; "" for the token
    std::string csrf;        // the login's CSRF token
  };
  struct Call;  // one request being answered (console.cpp)
  // Authenticates the call; false once it has been answered (401/403).
  bool authenticate(Call& call, Caller& caller);
  void login(Call& call);
  void login_with_certificate(Call& call);
  // A login's outcome: a failure of `name` ("user:<u>", "certificate", "token") counts
  // against the peer's address (LoginThrottle); a success clears that name's failures,
  // creates the login and answers with its cookie and CSRF token.
  void login_failed(const Call& call, const std::string& name);
  void logged_in(Call& call, const std::string& user, bool by_certificate, Role role);
  void logout(Call& call, const Caller& caller);
  void clients(Call& call, std::string_view rest, const Caller& caller);
  void disconnect(Call& call, const std::string& id, const Caller& caller);
  void delete_session(Call& call, const std::string& id, const Caller& caller);
  void revoke(Call& call, const std::string& id, const Caller& caller);
  void broker(Call& call);
  // The device list: queued, walked a slice per loop iteration, sorted on the pool.
  struct ListJob;
  void start_list(Call& call, ListQuery q);
  static void on_list_idle(uv_idle_t* idle);
  void sort_list(std::unique_ptr<ListJob> job);
  void answer_list(ListJob& job);  // the sorted page, written and sent
  void assets(Call& call);
  // An action's log line: who, from where, what, on what, and the outcome.
  void audit(const Call& call, const Caller& caller, const char* action, std::string_view target,
             const std::string& outcome);

  // The login cookie's attributes: "; Secure" over HTTPS.
  std::string cookie_attributes() const;
  // "__Host-mqgate_console" over HTTPS, else "mqgate_console".
  const char* cookie_name() const;

  uv_loop_t* loop_;
  Host& host_;
  bool https_;  // [http] has TLS: cookies are Secure
  std::string token_;
  Users users_;
  CertRoles cert_roles_;
  LoginSessions logins_;
  LoginThrottle throttle_;
  int logins_in_flight_ = 0;
  std::deque<std::unique_ptr<ListJob>> lists_;  // walking, the first one now
  size_t lists_sorting_ = 0;
  uv_idle_t list_idle_;  // active while lists_ is not empty
  bool list_idle_open_ = false;
  // Work on the thread pool holds a weak pointer to this: after the console is gone its
  // completion does nothing.
  std::shared_ptr<Console*> alive_ = std::make_shared<Console*>(this);
};

}  // namespace mqgate::console
