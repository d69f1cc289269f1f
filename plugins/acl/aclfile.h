/* Mosquitto ACL files, read unchanged, decided as Mosquitto 2.0 does (docs/acl.md).
 *
 *   topic [read|write|readwrite|deny] <filter>     before any "user": anonymous clients
 *   user <username>                                then: that user's topics
 *   pattern [read|write|readwrite|deny] <filter>   every client; %u %c %i substituted
 *
 * Plain C99, shared by the acl plugin (acl.c) and its tests. */
#ifndef MQGATE_ACLFILE_H
#define MQGATE_ACLFILE_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

#define ACL_MAX_FILE_BYTES (64u * 1024u * 1024u)
#define ACL_MAX_LINE_BYTES 65536u
#define ACL_ERR_LEN 512u

enum acl_access {
  ACL_READ = 1,      /* a message on `topic` may be delivered to the client */
  ACL_WRITE = 2,     /* the client may publish on `topic` */
  ACL_SUBSCRIBE = 4  /* the client may subscribe to the filter `topic` */
};

typedef struct aclfile aclfile;

/* Parses a file held in memory; NULL with "<name>:<line>: <what>" in err. */
aclfile* aclfile_parse(const char* name, const char* data, size_t len, char* err,
                       size_t errlen);
aclfile* aclfile_load(const char* path, char* err, size_t errlen);
void aclfile_free(aclfile* acl);

/* 1 allowed, 0 denied. username NULL = anonymous client; identity NULL = none (rules
 * with %i do not apply). For ACL_SUBSCRIBE, topic is the subscription filter, allowed
 * only if one rule grants read on every topic it can match and no deny rule of the same
 * list can match any of them (see docs/acl.md). */
int acl_check(const aclfile* acl, const char* username, const char* client_id,
              const char* identity, const char* topic, int access);

/* How much of what a subscription can receive the client may read, for Mosquitto's way
 * of subscribing: grant the SUBSCRIBE, check read on each message delivered. */
enum acl_reach {
  ACL_REACH_NONE = 0, /* no topic the filter can match is readable: refuse the SUBSCRIBE */
  ACL_REACH_SOME = 1, /* grant, but check ACL_READ on each delivered message */
  ACL_REACH_ALL = 2   /* every topic it can match is readable: no per-delivery check */
};

/* The reach of the subscription filter `filter` (arguments as acl_check's), measured
 * against acl_check(..., ACL_READ) on the topics it matches. ALL and NONE are always
 * true when returned; SOME is the answer otherwise, and also when the question is too
 * costly (each of the two questions, "is some topic unreadable", "is some topic
 * readable", has a budget of ACL_REACH_STEPS steps, since the client chooses the filter)
 * or memory runs out. Within the budget the answer is exact: a filter that only a
 * combination of rules covers is ALL, one that only a combination of deny rules shuts
 * off is NONE. An invalid filter (or a NULL acl or filter) is NONE.
 *
 * Cost: the rules that apply to the client are walked once, level by level, against the
 * filter (linear in their bytes, as acl_check's worst case, never rules times the
 * filter's length); that answers one of the two questions (whether the filter's generic
 * topic, a value no rule names at each wildcard, is readable), and the search for the
 * other stops at its first charge past its budget. */
int acl_subscribe_reach(const aclfile* acl, const char* username, const char* client_id,
                        const char* identity, const char* filter);

/* The search's budget. A step is a level of a filter looked at (and one per 64 bytes
 * scanned or compared); measured (-O3, x86-64) at 3 to 6 ns, so the search costs at most
 * some 30 us beyond the walk of the rules. */
#define ACL_REACH_STEPS 5000L

/* What an acl_subscribe_reach call cost, for the tests. */
typedef struct acl_reach_cost {
  unsigned long setup; /* relating the rules to the filter once: levels, and per 32 bytes */
  unsigned long steps; /* charged to the search; past the budget by at most one charge */
  int out_of_steps;    /* the search ran out, so the answer is SOME */
} acl_reach_cost;

/* acl_subscribe_reach with a budget of `budget` steps, and what it cost in *cost (unless
 * cost is NULL). */
int acl_subscribe_reach_cost(const aclfile* acl, const char* username, const char* client_id,
                             const char* identity, const char* filter, long budget,
                             acl_reach_cost* cost);

/* MQTT topics, as plugins/common/mqtt_topic.h decides them (the matcher the broker core
 * uses too), for NUL-terminated strings; see that header for the rules. */
/* 1 if filter matches topic ('$' topics are not matched by a filter starting with a
 * wildcard). */
int acl_topic_matches(const char* filter, const char* topic);
/* 1 if every topic sub can match is matched by rule ('+' and '#' on both sides). */
int filter_covers(const char* rule, const char* sub);
/* 1 if some topic is matched by both filters. */
int filter_intersects(const char* a, const char* b);
/* 1 if s is a valid MQTT filter ('#' last and alone in its level, '+' alone). */
int acl_filter_valid(const char* s);

#ifdef __cplusplus
}
#endif

#endif
