// The SQLite journal: round trips, order of barriers, the lock, damaged files, a crash
// right after an acknowledgement, and a full disk. Files live in a temp dir.
#include <doctest/doctest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

#include "store/sqlite_journal.hpp"

using namespace mqgate::store;
namespace fs = std::filesystem;

namespace {

// Stands in for the loop: completions are queued here and run by pump().
struct Loop {
  std::mutex m;
  std::condition_variable cv;
  std::vector<std::function<void()>> posted;
  Poster poster() {
    return [this](std::function<void()> f) {
      std::lock_guard<std::mutex> lock(m);
      posted.push_back(std::move(f));
      cv.notify_all();
    };
  }
  // Runs completions until `until` holds (or 10 s pass).
  bool pump(const std::function<bool()>& until) {
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    while (!until()) {
      std::vector<std::function<void()>> run;
      {
        std::unique_lock<std::mutex> lock(m);
        cv.wait_until(lock, deadline, [&] { return !posted.empty(); });
        if (posted.empty()) return false;
        run.swap(posted);
      }
      for (auto& f : run)
        f();
    }
    return true;
  }
};

struct TempDir {
  fs::path path;
  TempDir() {
    char tmpl[] = "/tmp/mqgate-store-XXXXXX";
    path = mkdtemp(tmpl);
  }
  ~TempDir() { fs::remove_all(path); }
  std::string file(const char* name) const { return (path / name).string(); }
};

Mutation session(const std::string& id, const std::string& owner) {
  Mutation m{Mutation::Kind::kPutSession, {id, owner, 0, 7}, {}, {}, {}, {}, {}};
  return m;
}

std::unique_ptr<SqliteJournal> open_ok(const std::string& path, Loop& loop,
                                       uint64_t max_bytes = 0) {
  std::string error;
  SqliteJournal::Options o;
  o.path = path;
  o.max_bytes = max_bytes;
  auto j = SqliteJournal::open(o, loop.poster(), error);
  REQUIRE_MESSAGE(j, error);
  return j;
}

void fill(SqliteJournal& j) {
  using K = Mutation::Kind;
  j.add(session("dev1", "certauth:spiffe://d/device/dev1 issuer=CN=ca"));
  j.add(session("dev2", "anonymous:anonymous"));
  Mutation sub{K::kPutSubscription, {}, {"dev1", "devices/dev1/#", 1}, {}, {}, {}, {}};
  j.add(sub);
  sub.subscription = {"dev2", "x/+", 2};
  j.add(sub);
  Mutation msg{
      K::kPutMessage, {}, {}, {42, "devices/dev1/cmd", std::string("p\0q", 3), 2, 0}, {}, {}, {}};
  j.add(msg);
  Mutation out{K::kPutOutgoing,
               {},
               {},
               {},
               {"dev1", 1, 42, 2, false, 17, OutgoingRecord::State::kAwaitPubrec},
               {},
               {}};
  j.add(out);
  out.outgoing = {"dev1", 2, 42, 1, true, 0, OutgoingRecord::State::kQueued};
  j.add(out);
  Mutation in{K::kPutIncoming, {}, {}, {}, {}, {"dev1", 9}, {}};
  j.add(in);
  Mutation ret{K::kPutRetained, {}, {}, {}, {}, {}, {"status", "online", 1, 0}};
  j.add(ret);
}

}  // namespace

TEST_CASE("what is written comes back after a reopen; removing a session takes its contents") {
  TempDir dir;
  Loop loop;
  {
    auto j = open_ok(dir.file("s.db"), loop);
    j->start();
    fill(*j);
    std::vector<int> order;
    j->barrier([&](bool ok) {
      CHECK(ok);
      order.push_back(1);
    });
    Mutation gone{Mutation::Kind::kRemoveSession, {"dev2", "", 0, 0}, {}, {}, {}, {}, {}};
    j->add(gone);
    j->barrier([&](bool ok) {
      CHECK(ok);
      order.push_back(2);
    });
    REQUIRE(loop.pump([&] { return order.size() == 2; }));
    CHECK(order == std::vector<int>{1, 2});
  }
  auto j = open_ok(dir.file("s.db"), loop);
  State s;
  std::string error;
  REQUIRE_MESSAGE(j->load(s, error), error);
  REQUIRE(s.sessions.size() == 1);
  CHECK(s.sessions[0].client_id == "dev1");
  CHECK(s.sessions[0].owner == "certauth:spiffe://d/device/dev1 issuer=CN=ca");
  CHECK(s.sessions[0].last_packet_id == 7);
  REQUIRE(s.subscriptions.size() == 1);  // dev2's went with it
  CHECK(s.subscriptions[0].filter == "devices/dev1/#");
  REQUIRE(s.messages.size() == 1);
  CHECK(s.messages[0].payload == std::string("p\0q", 3));
  CHECK(s.next_message_id == 43);
  REQUIRE(s.outgoing.size() == 2);
  CHECK(s.outgoing[0].seq == 1);
  CHECK(s.outgoing[0].packet_id == 17);
  CHECK(s.outgoing[0].state == OutgoingRecord::State::kAwaitPubrec);
  CHECK(s.outgoing[1].retain);
  REQUIRE(s.incoming_qos2.size() == 1);
  CHECK(s.incoming_qos2[0].packet_id == 9);
  REQUIRE(s.retained.size() == 1);
  CHECK(s.retained[0].payload == "online");
}

TEST_CASE("a second broker on the same file is refused; the lock goes with the first") {
  TempDir dir;
  Loop loop;
  auto first = open_ok(dir.file("s.db"), loop);
  std::string error;
  SqliteJournal::Options o;
  o.path = dir.file("s.db");
  CHECK_FALSE(SqliteJournal::open(o, loop.poster(), error));
  CHECK(error.find("another mqgate process uses this persistence file") != std::string::npos);
  first.reset();
  CHECK(SqliteJournal::open(o, loop.poster(), error));
}

TEST_CASE("a damaged or foreign file stops the broker and is left as it was") {
  TempDir dir;
  Loop loop;
  const std::string path = dir.file("s.db");
  {
    std::ofstream f(path, std::ios::binary);
    for (int i = 0; i < 1000; ++i)
      f << "this is not a database ";
  }
  const auto before = fs::file_size(path);
  std::string error;
  SqliteJournal::Options o;
  o.path = path;
  CHECK_FALSE(SqliteJournal::open(o, loop.poster(), error));
  CHECK(error.find(path) == 0);
  CHECK(error.find("restore") != std::string::npos);
  CHECK(fs::file_size(path) == before);
  // A real database with a page overwritten in the middle.
  const std::string path2 = dir.file("t.db");
  {
    auto j = open_ok(path2, loop);
    j->start();
    for (int i = 0; i < 2000; ++i) {
      Mutation m{Mutation::Kind::kPutRetained,
                 {},
                 {},
                 {},
                 {},
                 {},
                 {"t/" + std::to_string(i), std::string(200, 'x'), 0, 0}};
      j->add(m);
    }
    bool done = false;
    j->barrier([&](bool) { done = true; });
    REQUIRE(loop.pump([&] { return done; }));
  }
  fs::remove(path2 + "-wal");
  {
    std::fstream f(path2, std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(4096 * 5);
    for (int i = 0; i < 4096; ++i)
      f.put(static_cast<char>(i * 7));
  }
  CHECK_FALSE(SqliteJournal::open({path2}, loop.poster(), error));
  CHECK(error.find("damaged") != std::string::npos);
}

TEST_CASE("acknowledged means on disk: a crash right after the barrier loses nothing") {
  TempDir dir;
  const std::string path = dir.file("s.db");
  const pid_t child = fork();
  REQUIRE(child >= 0);
  if (child == 0) {
    Loop loop;
    std::string error;
    auto j = SqliteJournal::open({path}, loop.poster(), error);
    if (!j) _exit(2);
    j->start();
    fill(*j);
    bool ok = false, done = false;
    j->barrier([&](bool r) {
      ok = r;
      done = true;
    });
    if (!loop.pump([&] { return done; }) || !ok) _exit(3);
    _exit(0);  // like kill -9: no destructor, no close, no checkpoint
  }
  int status = 0;
  waitpid(child, &status, 0);
  REQUIRE(WIFEXITED(status));
  REQUIRE(WEXITSTATUS(status) == 0);
  Loop loop;
  auto j = open_ok(path, loop);
  State s;
  std::string error;
  REQUIRE(j->load(s, error));
  CHECK(s.sessions.size() == 2);
  CHECK(s.outgoing.size() == 2);
  CHECK(s.retained.size() == 1);
}

TEST_CASE("a full disk withholds acknowledgements, keeps the changes to retry, and never hangs") {
  TempDir dir;
  Loop loop;
  auto j = open_ok(dir.file("s.db"), loop, 64 * 1024);
  j->start();
  std::vector<bool> results;
  for (int round = 0; round < 3; ++round) {
    for (int i = 0; i < 50; ++i) {
      Mutation m{Mutation::Kind::kPutRetained,
                 {},
                 {},
                 {},
                 {},
                 {},
                 {"big/" + std::to_string(round * 50 + i), std::string(4000, 'x'), 0, 0}};
      j->add(m);
    }
    j->barrier([&](bool ok) { results.push_back(ok); });
  }
  REQUIRE(loop.pump([&] { return results.size() == 3; }));
  CHECK(results == std::vector<bool>{false, false, false});
  j.reset();  // stops after one last try, without hanging
}

TEST_CASE("entries put and removed again (in one commit or not) leave nothing; the others stay") {
  TempDir dir;
  Loop loop;
  {
    auto j = open_ok(dir.file("s.db"), loop);
    State empty;
    std::string error;
    REQUIRE(j->load(empty, error));
    j->start();
    Mutation body{Mutation::Kind::kPutMessage, {}, {}, {}, {}, {}, {}};
    body.message.id = 5;
    body.message.topic = "t";
    Mutation put{Mutation::Kind::kPutOutgoing, {}, {}, {}, {}, {}, {}};
    put.outgoing.client_id = "c";
    put.outgoing.seq = 1;
    put.outgoing.message_id = 5;
    Mutation kept = put;
    kept.outgoing.seq = 2;
    Mutation gone = put;
    gone.kind = Mutation::Kind::kRemoveOutgoing;
    Mutation body_gone = body;
    body_gone.kind = Mutation::Kind::kRemoveMessage;
    for (const Mutation& m : {body, put, kept, gone, body_gone})
      j->add(m);
    j->flush();
  }
  auto j = open_ok(dir.file("s.db"), loop);
  State s;
  std::string error;
  REQUIRE(j->load(s, error));
  REQUIRE(s.outgoing.size() == 1);
  CHECK(s.outgoing[0].seq == 2);
  CHECK(s.messages.empty());
}

TEST_CASE(
    "changes that wait for a full disk are compacted: bounded by the state, not the traffic") {
  using K = Mutation::Kind;
  auto out = [](K kind, uint64_t seq, bool creates) {
    Mutation m{kind, {}, {}, {}, {"dev1", seq, 0, 1, false, 0, OutgoingRecord::State::kQueued},
               {},   {}};
    m.creates = creates;
    return m;
  };
  auto msg = [](K kind, uint64_t id) {
    Mutation m{kind, {}, {}, {id, "t", "p", 1, 0}, {}, {}, {}};
    m.creates = kind == K::kPutMessage;
    return m;
  };
  std::vector<Mutation> changes;
  // A thousand messages queued and delivered while the disk is full: nothing of them need
  // ever be written.
  for (uint64_t i = 1; i <= 1000; ++i) {
    changes.push_back(msg(K::kPutMessage, i));
    changes.push_back(out(K::kPutOutgoing, i, true));
    changes.push_back(out(K::kPutOutgoing, i, false));  // in flight now
    changes.push_back(out(K::kRemoveOutgoing, i, false));
    changes.push_back(msg(K::kRemoveMessage, i));
  }
  // An entry already on disk before the failure (its first change here is not a creating
  // put): its update is dropped with it, the removal stays.
  changes.push_back(out(K::kPutOutgoing, 5000, false));
  changes.push_back(out(K::kRemoveOutgoing, 5000, false));
  // One still queued: it stays, once.
  changes.push_back(msg(K::kPutMessage, 7000));
  changes.push_back(out(K::kPutOutgoing, 7000, true));
  Mutation sub{K::kPutSubscription, {}, {"dev1", "devices/dev1/#", 1}, {}, {}, {}, {}};
  changes.push_back(sub);
  compact_unwritten(changes);
  REQUIRE(changes.size() == 4);
  CHECK(changes[0].kind == K::kRemoveOutgoing);
  CHECK(changes[0].outgoing.seq == 5000);
  CHECK(changes[1].kind == K::kPutMessage);
  CHECK(changes[1].message.payload == "p");  // moved, not lost
  CHECK(changes[2].kind == K::kPutOutgoing);
  CHECK(changes[3].kind == K::kPutSubscription);  // order kept
}

TEST_CASE("a retained message replaced or cleared before it was written is not written") {
  using K = Mutation::Kind;
  auto retained = [](K kind, const char* topic, std::string payload) {
    return Mutation{kind, {}, {}, {}, {}, {}, {topic, std::move(payload), 0, 0}};
  };
  std::vector<Mutation> changes;
  changes.push_back(retained(K::kPutRetained, "r/big", std::string(200000, 'x')));
  changes.push_back(retained(K::kPutRetained, "r/other", "kept"));
  changes.push_back(retained(K::kRemoveRetained, "r/big", ""));      // cleared
  changes.push_back(retained(K::kPutRetained, "r/other", "newer"));  // replaced
  compact_unwritten(changes);
  REQUIRE(changes.size() == 2);
  CHECK(changes[0].kind == K::kRemoveRetained);  // an older one may be on disk
  CHECK(changes[1].retained.payload == "newer");
}

TEST_CASE("room(): the store's cap less what it holds and what waits, less a reserve") {
  TempDir dir;
  Loop loop;
  CHECK_FALSE(open_ok(dir.file("nocap.db"), loop)->room().has_value());
  auto j = open_ok(dir.file("s.db"), loop, 256 * 1024);
  j->start();
  const uint64_t empty = j->room().value();
  CHECK(empty > 100 * 1024);
  CHECK(empty < 256 * 1024);
  Mutation m{Mutation::Kind::kPutRetained,        {}, {}, {}, {}, {},
             {"r", std::string(50000, 'x'), 0, 0}};
  j->add(m);
  CHECK(j->room().value() <= empty - 50000);  // counted before it is written
  bool done = false;
  j->barrier([&](bool ok) {
    CHECK(ok);
    done = true;
  });
  REQUIRE(loop.pump([&] { return done; }));
  const uint64_t after = j->room().value();
  CHECK(after <= empty - 45000);  // now measured from the file's pages (free ones reused)
  CHECK(after > empty - 70000);
  Mutation clear{Mutation::Kind::kRemoveRetained, {}, {}, {}, {}, {}, {"r", "", 0, 0}};
  j->add(clear);
  done = false;
  j->barrier([&](bool) { done = true; });
  REQUIRE(loop.pump([&] { return done; }));
  CHECK(j->room().value() >= empty - 8192);  // given back (the pages are free again)
}
