// The plugin chain (core/plugin/chain.hpp) with fake plugins: C callbacks that answer
// what their script says and record what they were shown. Covers "How decisions
// combine" rule by rule, deferral in the middle of a chain, timeouts (and the
// deferrals' deadlines), invalid answers, MQTT 5.0 enhanced authentication, and ABI 1
// and ABI 2 plugins side by side. No dlopen, no loop, no clock.
#include <doctest/doctest.h>

#include <cstdlib>
#include <cstring>
#include <deque>
#include <memory>
#include <string>
#include <vector>

#include "client/client.hpp"
#include "plugin/chain.hpp"
#include "plugin/deferrals.hpp"
#include "plugin/host.hpp"
#include "plugin/instance.hpp"

namespace mqgate {
namespace {

class TestClient final : public Client {
 public:
  TestClient(const std::string& id, const char* username) : Client(nullptr, "192.0.2.7:1883") {
    set_client_id(id);
    if (username != nullptr) set_username(username);
  }
  void schedule_flush() override {}
  void on_close_requested() override {}
  void on_resume_requested() override {}
};

// "p<i>". (Appending, not "p" + std::to_string(i): GCC 12 warns -Wrestrict about that at
// -O3, a false positive.)
std::string plugin_name(size_t i) {
  std::string name = "p";
  name += std::to_string(i);
  return name;
}

// What a fake plugin answers, and what it was shown.
struct Script {
  int answer = MQGATE_ABSTAIN;  // what the callback returns
  bool take_token = false;      // calls api->defer first
  bool take_two = false;        // ... and again
  const char* reason = nullptr;
  const char* identity = nullptr;
  const char* assign = nullptr;
  int connack_code = 0;
  int reason_code = 0;  // MQTT 5.0
  const char* reason_string = nullptr;
  const char* data_out = nullptr;
  size_t data_out_len = 0;  // with data_out NULL: a bad length
  // Shown.
  int calls = 0;
  uint32_t struct_size = 0;
  bool has_clean_session = false, has_filter = false;
  int action = 0, retain = -1, deferrable = -1, auth_step = -1;
  std::string filter, auth_data;
  mqgate_deferred* token = nullptr;
  mqgate_deferred* second_token = nullptr;
};

struct FakePlugin {
  mqgate_plugin plugin;
  Script script;
  std::vector<std::string>* order = nullptr;
};

char* dup(const char* s) {
  return s ? ::strdup(s) : nullptr;
}

int fake_callback(int event, void* data, void* instance) {
  auto& f = *static_cast<FakePlugin*>(instance);
  Script& s = f.script;
  s.calls++;
  if (f.order) f.order->push_back(f.plugin.name);
  if (s.take_token) s.token = detail::api_defer(&f.plugin);
  if (s.take_two) s.second_token = detail::api_defer(&f.plugin);
  if (event == MQGATE_EVT_AUTHENTICATE) {
    auto* e = static_cast<mqgate_evt_authenticate*>(data);
    s.struct_size = e->struct_size;
    s.has_clean_session = MQGATE_HAS_FIELD(e, mqgate_evt_authenticate, clean_session);
    e->reason = dup(s.reason);
    e->identity = dup(s.identity);
    e->assign_client_id = dup(s.assign);
    if (MQGATE_HAS_FIELD(e, mqgate_evt_authenticate, connack_code))
      e->connack_code = s.connack_code;
    if (MQGATE_HAS_FIELD(e, mqgate_evt_authenticate, auth_data_out_len)) {
      s.auth_step = e->auth_step;
      s.auth_data.assign(e->auth_data ? reinterpret_cast<const char*>(e->auth_data) : "",
                         e->auth_data_len);
      e->reason_code = s.reason_code;
      e->reason_string = dup(s.reason_string);
      if (s.data_out) {
        e->auth_data_out_len = std::strlen(s.data_out);
        e->auth_data_out = static_cast<uint8_t*>(std::malloc(e->auth_data_out_len + 1));
        std::memcpy(e->auth_data_out, s.data_out, e->auth_data_out_len);
      } else {
        e->auth_data_out_len = s.data_out_len;
      }
    }
  } else {
    auto* e = static_cast<mqgate_evt_authorize*>(data);
    s.struct_size = e->struct_size;
    s.action = e->action;
    s.retain = e->retain;
    s.has_filter = MQGATE_HAS_FIELD(e, mqgate_evt_authorize, filter);
    if (s.has_filter) {
      s.filter = e->filter ? e->filter : "(null)";
      s.deferrable = e->deferrable;
    }
    e->reason = dup(s.reason);
    if (MQGATE_HAS_FIELD(e, mqgate_evt_authorize, reason_string)) {
      e->reason_code = s.reason_code;
      e->reason_string = dup(s.reason_string);
    }
  }
  return s.answer;
}

// Tokens the fake deferrals hand out; a test completes them by hand.
struct FakeTokens final : TokenIssuer {
  std::vector<std::unique_ptr<mqgate_deferred>> issued;
  std::vector<mqgate_deferred*> released;
  mqgate_deferred* issue(const ChainRun& run) override {
    issued.push_back(std::make_unique<mqgate_deferred>());
    issued.back()->job_id = run.id;
    return issued.back().get();
  }
  void release(mqgate_deferred* token) override { released.push_back(token); }
};

struct Fixture {
  std::deque<FakePlugin> fakes;  // stable addresses
  PluginChain chain;
  TestClient client{"c1", "alice"};
  FakeTokens tokens;
  std::vector<std::string> order;

  Fixture() {
    chain.identity_prefix = "chain";
    chain.anonymous_identity = std::make_shared<const std::string>("chain:anonymous");
  }

  // A plugin of ABI `abi` on the chain's AUTHENTICATE and AUTHORIZE lists.
  Script& add(const std::string& name, int abi, int answer) {
    FakePlugin& f = fakes.emplace_back();
    f.plugin.name = name;
    f.plugin.abi_version = abi;
    f.plugin.callbacks[MQGATE_EVT_AUTHENTICATE] = fake_callback;
    f.plugin.callbacks[MQGATE_EVT_AUTHORIZE] = fake_callback;
    f.plugin.instance = &f;
    f.order = &order;
    f.script.answer = answer;
    chain.authenticate.push_back(&f.plugin);
    chain.authorize.push_back(&f.plugin);
    return f.script;
  }
  mqgate_plugin& plugin(size_t i) { return fakes[i].plugin; }
  uint64_t count(size_t i, AuthDecisionCounts::Phase phase, AuthDecisionCounts::Verdict v) {
    return fakes[i].plugin.decisions[phase][v];
  }

  ChainRun authenticate() {
    ChainRun run;
    run.id = 7;
    run.client = &client;
    run.chain = &chain;
    run.authenticating = true;
    run.protocol_level = 5;
    run.clean_session = true;
    return run;
  }
  ChainRun authorize(AuthAction action, bool may_defer = false) {
    ChainRun run;
    run.id = 8;
    run.client = &client;
    run.chain = &chain;
    run.authenticating = false;
    run.action = action;
    run.topic = "a/b";
    run.filter = action == AuthAction::kReceive ? "a/#" : "";
    run.may_defer = may_defer;
    return run;
  }
  // An enhanced authentication with `method`, asking the plugins that offer it.
  ChainRun exchange(const char* method, const char* data) {
    ChainRun run = authenticate();
    run.auth_method.emplace(method);
    run.auth_data.emplace(data);
    run.method_plugins = plugins_offering(chain, method);
    return run;
  }
  AuthResult decide(ChainRun run) {
    REQUIRE(run_chain(run, tokens) == ChainStop::kDone);
    return chain_result(run);
  }
};

using C = AuthDecisionCounts;
constexpr const char* kAllAbstained = "no plugin allowed the client (all abstained)";

TEST_CASE("AUTHENTICATE: ABSTAIN is ignored, any DENY denies, one ALLOW is needed") {
  struct Case {
    std::vector<int> answers;
    bool allowed;
  };
  const Case cases[] = {
      {{MQGATE_ALLOW}, true},
      {{MQGATE_ABSTAIN}, false},  // all abstain: denied
      {{MQGATE_ALLOW, MQGATE_ABSTAIN}, true},
      {{MQGATE_ABSTAIN, MQGATE_ALLOW}, true},
      {{MQGATE_ALLOW, MQGATE_DENY}, false},
      {{MQGATE_DENY, MQGATE_ALLOW}, false},
      {{MQGATE_ABSTAIN, MQGATE_ABSTAIN}, false},
      {{MQGATE_ALLOW, MQGATE_ALLOW}, true},
      {{MQGATE_ABSTAIN, MQGATE_ALLOW, MQGATE_DENY}, false},
  };
  for (const Case& c : cases) {
    Fixture f;
    for (size_t i = 0; i < c.answers.size(); ++i)
      f.add(plugin_name(i), 2, c.answers[i]);
    CAPTURE(c.answers.size());
    CAPTURE(c.answers[0]);
    AuthResult r = f.decide(f.authenticate());
    CHECK(r.allowed == c.allowed);
    CHECK_FALSE(r.pending);
    // Every plugin is asked, in order, also after a DENY.
    CHECK(f.order.size() == c.answers.size());
    for (size_t i = 0; i < f.order.size(); ++i)
      CHECK(f.order[i] == plugin_name(i));
    bool denied = false, allowed = false;
    for (int a : c.answers) {
      denied |= a == MQGATE_DENY;
      allowed |= a == MQGATE_ALLOW;
    }
    if (!c.allowed) CHECK(r.connack_code == 5);  // no plugin chose another
    if (!denied && !allowed) CHECK(r.reason == kAllAbstained);
    if (denied) CHECK(r.reason.find("denied") != std::string::npos);
  }
}

TEST_CASE("AUTHENTICATE: the log reason names every denying plugin and its reason") {
  Fixture f;
  f.add("first", 2, MQGATE_DENY).reason = "no such user";
  f.add("second", 2, MQGATE_ALLOW);
  f.add("third", 2, MQGATE_DENY);
  AuthResult r = f.decide(f.authenticate());
  CHECK_FALSE(r.allowed);
  CHECK(r.reason == "plugin \"first\": no such user; plugin \"third\": denied");
  CHECK(r.connack_code == 5);
  CHECK(f.count(0, C::kAuthenticate, C::kDeny) == 1);
  CHECK(f.count(1, C::kAuthenticate, C::kAllow) == 1);
}

TEST_CASE("AUTHORIZE: any DENY denies; otherwise allowed, also when all abstain") {
  for (AuthAction action : {AuthAction::kPublish, AuthAction::kSubscribe, AuthAction::kReceive}) {
    Fixture all_abstain;
    all_abstain.add("a", 2, MQGATE_ABSTAIN);
    all_abstain.add("b", 1, MQGATE_DECISION_ABSTAIN);
    CHECK(all_abstain.decide(all_abstain.authorize(action)).allowed);

    Fixture one_denies;
    one_denies.add("a", 2, MQGATE_ALLOW);
    one_denies.add("b", 2, MQGATE_DENY).reason = "not yours";
    one_denies.add("c", 2, MQGATE_ALLOW);
    AuthResult r = one_denies.decide(one_denies.authorize(action));
    CHECK_FALSE(r.allowed);
    CHECK(r.reason == "plugin \"b\": not yours");
    CHECK(one_denies.order.size() == 3);
  }
}

TEST_CASE("the first ALLOW that vouches for an identity or assigns a client id wins") {
  Fixture f;
  Script& abstainer = f.add("abstainer", 2, MQGATE_ABSTAIN);
  abstainer.identity = "ignored";  // not an ALLOW: not used
  abstainer.assign = "ignored-id";
  f.add("plain", 2, MQGATE_ALLOW);  // allows without naming anyone
  Script& first = f.add("first", 2, MQGATE_ALLOW);
  first.identity = "bob";
  first.assign = "device-1";
  Script& second = f.add("second", 2, MQGATE_ALLOW);
  second.identity = "mallory";
  second.assign = "device-2";
  AuthResult r = f.decide(f.authenticate());
  REQUIRE(r.allowed);
  REQUIRE(r.identity);
  CHECK(*r.identity == "first:bob");  // prefixed with the instance name
  CHECK(r.assigned_client_id == "device-1");
}

TEST_CASE("without a vouched identity: the chain's user or anonymous identity") {
  Fixture f;
  f.add("p", 2, MQGATE_ALLOW);
  AuthResult r = f.decide(f.authenticate());
  REQUIRE(r.identity);
  CHECK(*r.identity == "chain:user:alice");
  TestClient anonymous("c2", nullptr);
  ChainRun run = f.authenticate();
  run.client = &anonymous;
  r = f.decide(std::move(run));
  CHECK(r.identity == f.chain.anonymous_identity);  // shared
}

TEST_CASE("an identity over 128 KiB turns the ALLOW into a DENY") {
  Fixture f;
  const std::string huge(128 * 1024 + 1, 'x');
  f.add("big", 2, MQGATE_ALLOW).identity = huge.c_str();
  AuthResult r = f.decide(f.authenticate());
  CHECK_FALSE(r.allowed);
  CHECK(r.reason.find("identity longer than 131072 bytes") != std::string::npos);
}

TEST_CASE("the first denying plugin's CONNACK code and MQTT 5 reason are sent") {
  Fixture f;
  f.add("allow", 2, MQGATE_ALLOW);
  Script& first = f.add("first", 2, MQGATE_DENY);
  first.connack_code = MQGATE_CONNACK_BAD_CREDENTIALS;
  first.reason_code = 0x8A;
  first.reason_string = "banned";
  Script& second = f.add("second", 2, MQGATE_DENY);
  second.connack_code = MQGATE_CONNACK_NOT_AUTHORIZED;
  second.reason_code = 0x9F;
  second.reason_string = "later";
  AuthResult r = f.decide(f.authenticate());
  CHECK(r.connack_code == 4);
  CHECK(r.reason_code == 0x8A);
  CHECK(r.reason_string == "banned");

  SUBCASE("a code that is not a failure code of the packet becomes 0x87") {
    Fixture g;
    g.add("odd", 2, MQGATE_DENY).reason_code = 0x10;  // not a CONNACK failure
    CHECK(g.decide(g.authenticate()).reason_code == 0x87);
    Fixture h;
    h.add("sub", 2, MQGATE_DENY).reason_code = 0x8F;  // a SUBACK code ...
    CHECK(h.decide(h.authorize(AuthAction::kSubscribe)).reason_code == 0x8F);
    CHECK(h.decide(h.authorize(AuthAction::kPublish)).reason_code == 0x87);  // ... not PUBACK
  }
  SUBCASE("an ABI 1 plugin's bytes where ABI 2 has connack_code are not read") {
    Fixture g;
    g.add("old", 1, MQGATE_DECISION_DENY).connack_code = MQGATE_CONNACK_BAD_CREDENTIALS;
    CHECK(g.decide(g.authenticate()).connack_code == 5);
  }
}

TEST_CASE("a plugin that defers in the middle: the chain waits, then goes on after it") {
  Fixture f;
  Script& before = f.add("before", 2, MQGATE_ALLOW);
  Script& deferring = f.add("deferring", 2, MQGATE_DEFER);
  deferring.take_token = true;
  Script& after = f.add("after", 2, MQGATE_ALLOW);
  after.identity = "too-late";
  ChainRun run = f.authenticate();
  REQUIRE(run_chain(run, f.tokens) == ChainStop::kDeferred);
  CHECK(run.waiting_on == &f.plugin(1));
  REQUIRE(deferring.token != nullptr);
  CHECK(run.token == deferring.token);
  CHECK(deferring.token->job_id == run.id);
  CHECK(before.calls == 1);
  CHECK(after.calls == 0);  // not asked until the deferred answer is in
  CHECK(f.tokens.released.empty());
  // Not counted until it completes.
  CHECK(f.count(1, C::kAuthenticate, C::kAllow) == 0);

  SUBCASE("it allows") {
    DeferredAnswer later;
    later.verdict = MQGATE_ALLOW;
    later.identity = "carol";
    REQUIRE(resume_chain(run, later, f.tokens) == ChainStop::kDone);
    CHECK(after.calls == 1);
    CHECK(run.waiting_on == nullptr);
    AuthResult r = chain_result(run);
    CHECK(r.allowed);
    REQUIRE(r.identity);
    CHECK(*r.identity == "deferring:carol");
    CHECK(f.count(1, C::kAuthenticate, C::kAllow) == 1);
  }
  SUBCASE("it denies with CONNACK 4") {
    DeferredAnswer later;
    later.verdict = MQGATE_DENY;
    later.reason = "unknown user";
    later.connack_code = MQGATE_CONNACK_BAD_CREDENTIALS;
    REQUIRE(resume_chain(run, later, f.tokens) == ChainStop::kDone);
    CHECK(after.calls == 1);  // still asked: every plugin sees every attempt
    AuthResult r = chain_result(run);
    CHECK_FALSE(r.allowed);
    CHECK(r.connack_code == 4);
    CHECK(r.reason == "plugin \"deferring\": unknown user");
  }
  SUBCASE("the next plugin defers too") {
    after.answer = MQGATE_DEFER;
    after.take_token = true;
    DeferredAnswer later;
    later.verdict = MQGATE_ABSTAIN;
    REQUIRE(resume_chain(run, later, f.tokens) == ChainStop::kDeferred);
    CHECK(run.waiting_on == &f.plugin(2));
    CHECK(run.token == after.token);
    later.verdict = MQGATE_ALLOW;
    REQUIRE(resume_chain(run, later, f.tokens) == ChainStop::kDone);
    CHECK(chain_result(run).allowed);
  }
  SUBCASE("a deferred CONTINUE outside an enhanced authentication is a DENY") {
    DeferredAnswer later;
    later.verdict = MQGATE_CONTINUE;
    REQUIRE(resume_chain(run, later, f.tokens) == ChainStop::kDone);
    AuthResult r = chain_result(run);
    CHECK_FALSE(r.allowed);
    CHECK(r.reason.find("continued outside an enhanced authentication") != std::string::npos);
  }
}

TEST_CASE("AUTHORIZE defers only where it may: a client's PUBLISH or SUBSCRIBE") {
  Fixture f;
  Script& s = f.add("d", 2, MQGATE_DEFER);
  s.take_token = true;
  ChainRun run = f.authorize(AuthAction::kPublish, true);
  REQUIRE(run_chain(run, f.tokens) == ChainStop::kDeferred);
  CHECK(s.deferrable == 1);
  DeferredAnswer later;
  later.verdict = MQGATE_DENY;
  later.reason_code = 0x97;
  REQUIRE(resume_chain(run, later, f.tokens) == ChainStop::kDone);
  AuthResult r = chain_result(run);
  CHECK_FALSE(r.allowed);
  CHECK(r.reason_code == 0x97);

  // A will (may_defer false): api->defer gives no token, and DEFER is a logged DENY.
  s.token = nullptr;
  r = f.decide(f.authorize(AuthAction::kPublish, false));
  CHECK(s.deferrable == 0);
  CHECK(s.token == nullptr);
  CHECK_FALSE(r.allowed);
  CHECK(r.reason == "plugin \"d\": deferred where it cannot");
  CHECK(f.count(0, C::kAuthorize, C::kError) == 1);
}

TEST_CASE("a decision that does not come within auth_timeout is a DENY") {
  Fixture f;
  f.add("ok", 2, MQGATE_ALLOW);
  f.add("slow", 2, MQGATE_DEFER).take_token = true;
  Script& after = f.add("after", 2, MQGATE_ALLOW);
  ChainRun run = f.authenticate();
  REQUIRE(run_chain(run, f.tokens) == ChainStop::kDeferred);
  time_out_chain(run, 10);
  AuthResult r = chain_result(run);
  CHECK_FALSE(r.allowed);
  CHECK(r.reason == "plugin \"slow\": no decision within auth_timeout (10 s)");
  CHECK(r.connack_code == 5);
  CHECK(after.calls == 0);  // the run is over
  CHECK(f.count(1, C::kAuthenticate, C::kTimeout) == 1);
  CHECK(f.count(1, C::kAuthenticate, C::kDeny) == 0);
}

TEST_CASE("deferrals: a run waits until its deadline; late and stale completions are ignored") {
  Fixture f;
  f.add("slow", 2, MQGATE_DEFER).take_token = true;
  Deferrals deferrals(nullptr);
  auto run = std::make_unique<ChainRun>(f.authenticate());
  REQUIRE(run_chain(*run, deferrals) == ChainStop::kDeferred);  // a real token
  mqgate_deferred* token = run->token;
  REQUIRE(token != nullptr);
  CHECK(token->refs.load() == 2);  // the plugin's and the host's
  int (*is_live)(const mqgate_deferred*) = detail::host_api()->deferred_is_live;
  CHECK(is_live(token) == 1);  // ABI 2.4: awaited
  const auto t0 = Deferrals::Clock::now();
  deferrals.park(std::move(run), t0 + std::chrono::seconds(10));
  CHECK(deferrals.pending() == 1);
  CHECK(deferrals.expired(t0 + std::chrono::seconds(9)).empty());
  std::vector<uint64_t> due = deferrals.expired(t0 + std::chrono::seconds(10));
  REQUIRE(due.size() == 1);
  // What api->complete makes: it holds the plugin's reference until it is dropped.
  auto completion = std::make_unique<TokenCompletion>();
  completion->token = token;
  completion->answer.verdict = MQGATE_ALLOW;

  SUBCASE("the deadline passes, then the plugin completes") {
    std::unique_ptr<ChainRun> expired = deferrals.take_expired(due[0]);
    REQUIRE(expired);
    CHECK(expired->token == nullptr);
    CHECK(token->refs.load() == 1);  // the host's reference is given back
    CHECK(is_live(token) == 0);      // timed out: the plugin may skip its work
    CHECK(deferrals.pending() == 0);
    CHECK_FALSE(deferrals.take_expired(due[0]));
    time_out_chain(*expired, 10);
    CHECK_FALSE(chain_result(*expired).allowed);
    CHECK_FALSE(deferrals.take(*completion));  // late: matched to nothing
  }
  SUBCASE("the answer comes in time") {
    CHECK(is_live(token) == 1);
    std::unique_ptr<ChainRun> waiting = deferrals.take(*completion);
    REQUIRE(waiting);
    CHECK(token->refs.load() == 1);
    CHECK(deferrals.pending() == 0);
    REQUIRE(resume_chain(*waiting, completion->answer, deferrals) == ChainStop::kDone);
    CHECK(chain_result(*waiting).allowed);
  }
  SUBCASE("a token of the same run that it no longer waits for") {
    TokenCompletion stale;
    stale.token = deferrals.issue(f.authenticate());
    stale.token->job_id = due[0];
    CHECK_FALSE(deferrals.take(stale));
    CHECK(deferrals.pending() == 1);
    deferrals.release(stale.token);  // the host's; `stale` drops the plugin's
    CHECK(is_live(token) == 1);
    deferrals.clear();  // unloading: gives back the waiting run's reference
    CHECK(token->refs.load() == 1);
    CHECK(is_live(token) == 0);  // shutting down
  }
  SUBCASE("the client goes away") {
    deferrals.forget(f.client);
    CHECK(deferrals.pending() == 0);
    CHECK(token->refs.load() == 1);
    CHECK(is_live(token) == 0);  // client gone
    CHECK_FALSE(deferrals.take(*completion));
  }
  completion.reset();  // the last reference: the token is freed (ASan would see a leak)
}

TEST_CASE("an answer that is not valid for the plugin's ABI is a logged DENY") {
  struct Case {
    int abi, answer;
    const char* reason;
  };
  const Case cases[] = {
      {2, MQGATE_OK, "returned an invalid decision (0)"},  // an error code, not a decision
      {2, MQGATE_ERR_PLUGIN, "returned an invalid decision (-7)"},
      {2, MQGATE_DECISION_ALLOW, "returned an invalid decision (1)"},  // an ABI 1 value
      {2, 42, "returned an invalid decision (42)"},
      {1, MQGATE_ALLOW, "returned an invalid decision (17)"},  // an ABI 2 value
      {1, -1, "returned an invalid decision (-1)"},
      {2, MQGATE_DEFER, "deferred where it cannot"},  // without a token
      {2, MQGATE_CONTINUE, "continued outside an enhanced authentication"},
  };
  for (const Case& c : cases) {
    CAPTURE(c.abi);
    CAPTURE(c.answer);
    Fixture f;
    f.add("allower", 2, MQGATE_ALLOW);
    f.add("wrong", c.abi, c.answer);
    AuthResult r = f.decide(f.authenticate());
    CHECK_FALSE(r.allowed);
    CHECK(r.reason == std::string("plugin \"wrong\": ") + c.reason);
    CHECK(f.count(1, C::kAuthenticate, C::kError) == 1);
    Fixture g;
    g.add("wrong", c.abi, c.answer);
    CHECK_FALSE(g.decide(g.authorize(AuthAction::kPublish)).allowed);
  }
}

TEST_CASE("a token taken by a plugin that then answers at once is given back") {
  Fixture f;
  Script& s = f.add("changed-its-mind", 2, MQGATE_ALLOW);
  s.take_token = true;
  AuthResult r = f.decide(f.authenticate());
  CHECK(r.allowed);
  REQUIRE(s.token != nullptr);
  REQUIRE(f.tokens.released.size() == 1);
  CHECK(f.tokens.released[0] == s.token);
  // One token per call: a second api->defer in the same call gets none.
  Fixture g;
  Script& twice = g.add("twice", 2, MQGATE_DEFER);
  twice.take_token = twice.take_two = true;
  ChainRun run = g.authenticate();
  REQUIRE(run_chain(run, g.tokens) == ChainStop::kDeferred);
  CHECK(twice.token != nullptr);
  CHECK(twice.second_token == nullptr);
  // Outside a callback there is no call to defer.
  CHECK(detail::api_defer(&g.plugin(0)) == nullptr);
}

TEST_CASE("enhanced authentication: CONTINUE goes back to the client, then to the same plugin") {
  Fixture f;
  Script& other = f.add("other", 2, MQGATE_ALLOW);  // offers no method: not asked
  Script& echo = f.add("echo", 2, MQGATE_CONTINUE);
  echo.data_out = "challenge:x";
  f.plugin(1).auth_methods.push_back("ECHO");
  ChainRun run = f.exchange("ECHO", "x");
  REQUIRE(run.method_plugins.size() == 1);
  REQUIRE(run_chain(run, f.tokens) == ChainStop::kContinuing);
  CHECK(run.waiting_on == &f.plugin(1));
  REQUIRE(run.auth_data_out);
  CHECK(*run.auth_data_out == "challenge:x");
  CHECK(echo.auth_step == 0);
  CHECK(echo.auth_data == "x");
  CHECK(other.calls == 0);
  CHECK(f.count(1, C::kAuthenticate, C::kAllow) == 0);  // a CONTINUE is not a decision

  // The client's AUTH 0x18.
  next_auth_step(run, std::string_view("answer"));
  echo.answer = MQGATE_ALLOW;
  echo.data_out = "welcome";
  echo.identity = "echo-user";
  REQUIRE(run_chain(run, f.tokens) == ChainStop::kDone);
  CHECK(echo.auth_step == 1);
  CHECK(echo.auth_data == "answer");
  AuthResult r = chain_result(run);
  CHECK(r.allowed);
  REQUIRE(r.auth_data);
  CHECK(*r.auth_data == "welcome");
  CHECK(*r.identity == "echo:echo-user");

  SUBCASE("a deferred step may CONTINUE too") {
    Fixture g;
    Script& d = g.add("d", 2, MQGATE_DEFER);
    d.take_token = true;
    g.plugin(0).auth_methods.push_back("ECHO");
    ChainRun exchange = g.exchange("ECHO", "y");
    REQUIRE(run_chain(exchange, g.tokens) == ChainStop::kDeferred);
    DeferredAnswer later;
    later.verdict = MQGATE_CONTINUE;
    later.auth_data = "challenge:y";
    REQUIRE(resume_chain(exchange, later, g.tokens) == ChainStop::kContinuing);
    CHECK(exchange.waiting_on == &g.plugin(0));
    CHECK(*exchange.auth_data_out == "challenge:y");
  }
  SUBCASE("auth_data_out NULL with a length is a DENY") {
    Fixture g;
    Script& bad = g.add("bad", 2, MQGATE_CONTINUE);
    bad.data_out_len = 5;
    g.plugin(0).auth_methods.push_back("ECHO");
    AuthResult denied = g.decide(g.exchange("ECHO", "z"));
    CHECK_FALSE(denied.allowed);
    CHECK(denied.reason == "plugin \"bad\": sent invalid authentication data");
  }
}

TEST_CASE("ABI 1 and ABI 2 plugins in one chain: each gets its own struct and values") {
  Fixture f;
  Script& v1 = f.add("v1", 1, MQGATE_DECISION_ALLOW);
  Script& v2 = f.add("v2", 2, MQGATE_ABSTAIN);
  Script& v1_abstains = f.add("v1-abstains", 1, MQGATE_DECISION_ABSTAIN);  // 0
  AuthResult r = f.decide(f.authenticate());
  CHECK(r.allowed);
  CHECK(v1.struct_size == MQGATE_EVT_AUTHENTICATE_SIZE_V1);
  CHECK_FALSE(v1.has_clean_session);  // covered by the size, but not filled for ABI 1
  CHECK(v2.struct_size == sizeof(mqgate_evt_authenticate));
  CHECK(v2.has_clean_session);
  CHECK(v1_abstains.calls == 1);
  CHECK(f.count(0, C::kAuthenticate, C::kAllow) == 1);
  CHECK(f.count(2, C::kAuthenticate, C::kAbstain) == 1);

  SUBCASE("an ABI 1 plugin cannot defer") {
    v1.take_token = true;
    v1.answer = MQGATE_DECISION_DENY;
    CHECK_FALSE(f.decide(f.authenticate()).allowed);
    CHECK(v1.token == nullptr);
  }
  SUBCASE("a retained delivery: SUBSCRIBE with retain 1 for ABI 1, RECEIVE for ABI 2") {
    CHECK(f.decide(f.authorize(AuthAction::kReceive)).allowed);
    CHECK(v1.struct_size == MQGATE_EVT_AUTHORIZE_SIZE_V1);
    CHECK(v1.action == MQGATE_ACTION_SUBSCRIBE);
    CHECK(v1.retain == 1);
    CHECK_FALSE(v1.has_filter);
    CHECK(v2.struct_size == sizeof(mqgate_evt_authorize));
    CHECK(v2.action == MQGATE_ACTION_RECEIVE);
    CHECK(v2.filter == "a/#");
    CHECK(v2.deferrable == 0);
  }
  SUBCASE("an ABI 1 DENY and an ABI 2 ALLOW: denied") {
    v1.answer = MQGATE_DECISION_DENY;
    v2.answer = MQGATE_ALLOW;
    CHECK_FALSE(f.decide(f.authorize(AuthAction::kPublish)).allowed);
    CHECK_FALSE(f.decide(f.authenticate()).allowed);
  }
}

TEST_CASE("a live RECEIVE: an ABI 1 plugin cannot express a wish, so the check stays") {
  // After a reload its SUBSCRIBE denied, a subscription is kept and checked per topic;
  // an ABI 1 plugin ALLOWing one topic must not stop the checks for every other topic.
  Fixture f;
  f.add("v1", 1, MQGATE_DECISION_ALLOW);
  ChainRun run = f.authorize(AuthAction::kReceive);
  run.live = true;
  run.delivery_check_in = kCheckPerTopic;
  AuthResult r = f.decide(std::move(run));
  CHECK(r.allowed);
  CHECK(r.delivery_check == kCheckPerTopic);

  SUBCASE("beside an ABI 2 plugin that keeps it") {
    Script& v2 = f.add("v2", 2, MQGATE_ABSTAIN);
    run = f.authorize(AuthAction::kReceive);
    run.live = true;
    run.delivery_check_in = kCheckEvery;
    CHECK(f.decide(std::move(run)).delivery_check == kCheckEvery);
    CHECK(v2.calls == 1);
  }
}

}  // namespace
}  // namespace mqgate

TEST_CASE("broker-owned topics: two claims overlap when some topic matches both") {
  using mqgate::filters_overlap;
  CHECK(filters_overlap("$provision/+/csr", "$provision/+/csr"));
  CHECK(filters_overlap("$provision/+/csr", "$provision/dev-1/#"));
  CHECK(filters_overlap("$provision/#", "$provision"));  // '#' matches its parent level
  CHECK(filters_overlap("$a/+/c", "$a/b/+"));
  CHECK_FALSE(filters_overlap("$provision/+/csr", "$provision/+/renew"));
  CHECK_FALSE(filters_overlap("$provision/+/csr", "$provision/+"));
  CHECK_FALSE(filters_overlap("$provision/+/csr", "$provision/a/csr/x"));
  CHECK_FALSE(filters_overlap("$a/b", "$b/#"));
}
