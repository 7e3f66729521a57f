#include <kws/kafka/api_verdicts.hpp>

namespace kws::kafka {

bool api_verdicts::is_kafka_0_8(std::string_view broker) const {
  std::lock_guard lock(mu_);
  return brokers_.find(broker) != brokers_.end();
}

bool api_verdicts::remember_kafka_0_8(std::string_view broker) {
  std::lock_guard lock(mu_);
  if (brokers_.find(broker) != brokers_.end()) return false;
  if (brokers_.size() < max_) brokers_.emplace(broker);
  return true;
}

std::size_t api_verdicts::size() const {
  std::lock_guard lock(mu_);
  return brokers_.size();
}

}  // namespace kws::kafka
