// Where sessions live. The broker only uses this interface, so durable persistence can
// replace the in-memory store later without touching the MQTT logic.
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>

#include "broker/session.hpp"

namespace mqgate {

class SessionStore {
 public:
  virtual ~SessionStore() = default;
  virtual Session* find(std::string_view client_id) = 0;
  // Creates a session; there must be none with that id.
  virtual Session* create(std::string client_id, bool clean) = 0;
  // Removes the session and hands it over (the broker may keep it a little longer, while
  // sliced work still holds pointers to it).
  virtual std::unique_ptr<Session> remove(Session* session) = 0;
  virtual size_t size() const = 0;
  virtual void for_each(const std::function<void(Session&)>& fn) = 0;
  // A walk in slices (the console's device list, between loop iterations): calls fn for
  // the sessions from `cursor` on, about `budget` of them, and moves the cursor; true
  // once the walk is over. Between slices sessions may come and go: a walk sees each
  // session that stays throughout exactly once while layout() is unchanged (when it
  // changes, start again from 0).
  virtual bool walk(size_t& cursor, size_t budget, const std::function<void(Session&)>& fn) {
    (void)budget;
    if (cursor == 0) for_each(fn);
    cursor = 1;
    return true;
  }
  virtual size_t layout() const { return 0; }
};

class MemorySessionStore final : public SessionStore {
 public:
  Session* find(std::string_view client_id) override {
    auto it = sessions_.find(client_id);
    return it == sessions_.end() ? nullptr : it->second.get();
  }
  Session* create(std::string client_id, bool clean) override {
    auto s = std::make_unique<Session>(std::move(client_id), clean);
    Session* raw = s.get();
    sessions_.emplace(raw->client_id(), std::move(s));  // the key views the session's id
    return raw;
  }
  std::unique_ptr<Session> remove(Session* session) override {
    auto it = sessions_.find(session->client_id());
    if (it == sessions_.end()) return nullptr;
    std::unique_ptr<Session> s = std::move(it->second);
    sessions_.erase(it);  // by iterator: the key views the session's id, still alive
    return s;
  }
  size_t size() const override { return sessions_.size(); }
  void for_each(const std::function<void(Session&)>& fn) override {
    for (auto& [id, s] : sessions_) fn(*s);
  }
  // The cursor is a bucket index: buckets keep their sessions until a rehash, which
  // changes bucket_count() (layout()).
  bool walk(size_t& cursor, size_t budget, const std::function<void(Session&)>& fn) override {
    size_t seen = 0;
    const size_t buckets = sessions_.bucket_count();
    for (; cursor < buckets && seen < budget; ++cursor)
      for (auto it = sessions_.begin(cursor); it != sessions_.end(cursor); ++it, ++seen)
        fn(*it->second);
    return cursor >= buckets;
  }
  size_t layout() const override { return sessions_.bucket_count(); }

 private:
  std::unordered_map<std::string_view, std::unique_ptr<Session>> sessions_;
};

}  // namespace mqgate
