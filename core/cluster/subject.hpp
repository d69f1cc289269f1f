// MQTT topics and filters <-> NATS subjects, lossless both ways (docs/cluster.md).
//
// A topic's levels become the subject's tokens after the cluster's prefix
// ("mqgate.<name>.m."). NATS tokens cannot be empty, hold '.', whitespace, and '*' or
// '>' are wildcards, while an MQTT level may be empty or hold any UTF-8: each byte
// outside a safe set is written %XX (upper-case hex), '%' included, and the empty level
// is the token "%" alone (never produced by the escape, so decoding is unambiguous).
// Filters: '+' becomes '*', '#' becomes '>' and also the parent level ("a/#" also
// matches "a"): two subjects. NATS matching is then a superset of MQTT matching: it
// does not know the '$' rule, so the receiving node matches again with its own router.
// Pure string logic.
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace mqgate::cluster {

// Longest subject sent or subscribed to: NATS control lines (PUB/SUB/MSG) are limited
// to 4 KiB by default, and the line also carries the subscription id and sizes.
inline constexpr size_t kMaxSubjectBytes = 3584;

// "mqgate.<cluster_name>.m." (the name is a valid token: config checks it).
std::string message_prefix(std::string_view cluster_name);

// The subject of `topic` (a valid topic name); nullopt when over kMaxSubjectBytes.
std::optional<std::string> topic_subject(std::string_view prefix, std::string_view topic);

// The topic of a subject topic_subject() made; nullopt if `subject` is not one (another
// prefix, a bad escape, a wildcard): a hostile or foreign message.
std::optional<std::string> subject_topic(std::string_view prefix, std::string_view subject);

// The one or two subjects that together match every topic `filter` (valid) matches;
// empty when over kMaxSubjectBytes.
std::vector<std::string> filter_subjects(std::string_view prefix, std::string_view filter);

// NATS's own matching ('*' one token, '>' one or more), for tests and checks.
bool subject_matches(std::string_view pattern, std::string_view subject);

}  // namespace mqgate::cluster
