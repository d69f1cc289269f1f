// [http]'s TLS (HTTPS): the endpoint's Channel (http/channel.hpp) made of the listeners'
// TLS layer, a TlsSession, whose handshake steps run on the TLS worker threads.
#pragma once

#include <memory>
#include <string>
#include <string_view>

#include "http/channel.hpp"
#include "transport/tls/tls.hpp"

namespace mqgate {

class HttpTlsChannel final : public http::Channel,
                             private transport::LayerEvents,
                             private transport::Receiver {
 public:
  // `current`: the endpoint's TLS generation, which outlives the channel (see TlsSession).
  HttpTlsChannel(const std::shared_ptr<const TlsGeneration>* current, TlsWorkers& workers,
                 char* scratch, size_t scratch_size, http::Channel::Events& events);

  bool input(std::string_view bytes, std::string& error) override {
    return session_->input(bytes, *this, error);
  }
  bool ready() const override { return session_->ready(); }
  bool available() const override { return session_->wire_available(); }
  bool send(std::string& plain, std::string& error) override {
    return session_->send(plain, error);
  }
  std::string& wire() override { return session_->wire(); }
  void shutdown() override { session_->shutdown(); }
  const TlsPeerInfo* peer() const override { return peer_.get(); }
  void abandon() override;

 private:
  bool on_layer_output(transport::StreamLayer&) override { return events_.on_channel_output(); }
  void on_layer_ready(transport::StreamLayer&, const std::string& error) override;
  bool on_bytes(std::string_view bytes) override { return events_.on_channel_bytes(bytes); }

  http::Channel::Events& events_;
  std::unique_ptr<TlsSession> session_;
  std::unique_ptr<TlsPeerInfo> peer_;
};

}  // namespace mqgate
