#include "cluster/interest.hpp"

namespace mqgate::cluster {

bool Interest::add(std::string_view filter) {
  auto it = counts_.find(filter);
  if (it != counts_.end()) {
    ++it->second;
    return false;
  }
  counts_.emplace(std::string(filter), 1);
  return true;
}

bool Interest::remove(std::string_view filter) {
  auto it = counts_.find(filter);
  if (it == counts_.end()) return false;
  if (--it->second > 0) return false;
  counts_.erase(it);
  return true;
}

uint32_t Interest::count(std::string_view filter) const {
  auto it = counts_.find(filter);
  return it == counts_.end() ? 0 : it->second;
}

}  // namespace mqgate::cluster
