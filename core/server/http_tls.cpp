#include "server/http_tls.hpp"

namespace mqgate {

HttpTlsChannel::HttpTlsChannel(const std::shared_ptr<const TlsGeneration>* current,
                               TlsWorkers& workers, char* scratch, size_t scratch_size,
                               http::Channel::Events& events)
    : events_(events),
      session_(std::make_unique<TlsSession>(current, workers.next_worker(), workers,
                                            static_cast<transport::LayerEvents&>(*this), scratch,
                                            scratch_size)) {}

void HttpTlsChannel::on_layer_ready(transport::StreamLayer&, const std::string& error) {
  if (error.empty()) peer_ = session_->take_peer_info();
  events_.on_channel_ready(error);
}

void HttpTlsChannel::abandon() {
  // A worker running a handshake step keeps the session until it is done; the session
  // then deletes itself without calling back (this channel is gone).
  if (!session_->wire_available()) session_.release()->abandon([] {});
  delete this;
}

}  // namespace mqgate
