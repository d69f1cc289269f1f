/* Mosquitto password files, read and written unchanged (docs/passwd.md).
 *
 *   user:$7$<iterations>$<base64 salt>$<base64 hash>   PBKDF2-HMAC-SHA512 (Mosquitto 2.0)
 *   user:$6$<base64 salt>$<base64 hash>                SHA512(password || salt) (1.x)
 *
 * Plain C99 over mbedTLS, so the passwd plugin (passwd.c) and the mqgate_passwd
 * CLI share it. A file is accepted whole or refused with "<file>:<line>: <what>". */
#ifndef MQGATE_PWFILE_H
#define MQGATE_PWFILE_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

#define PW_MAX_FILE_BYTES (64u * 1024u * 1024u) /* a bigger file is refused */
#define PW_MAX_LINE_BYTES 65536u                /* line without its newline */
#define PW_MAX_USERNAME 65535u                  /* as Mosquitto */
#define PW_MIN_ITERATIONS 1u
#define PW_MAX_ITERATIONS 1000000u  /* a hostile file must not cost minutes per hash */
#define PW_DEFAULT_ITERATIONS 101u  /* mosquitto_passwd 2.0.11's default */
#define PW_SALT_BYTES 12u           /* what mosquitto_passwd writes */
#define PW_MAX_SALT_BYTES 64u
#define PW_HASH_BYTES 64u           /* SHA-512 */
#define PW_MAX_PASSWORD 65535u
#define PW_ERR_LEN 512u

typedef enum { PW_SHA512 = 6, PW_SHA512_PBKDF2 = 7 } pw_type;

typedef struct pw_hash {
  pw_type type;
  unsigned iterations; /* PBKDF2 only */
  size_t salt_len;
  unsigned char salt[PW_MAX_SALT_BYTES];
  unsigned char hash[PW_HASH_BYTES];
} pw_hash;

typedef struct pwfile pwfile;

/* Parses "$6$..." / "$7$..." (the text after "user:"). 0 on success, else -1 with a
 * message (no file or line: the caller adds them). */
int pw_hash_parse(const char* text, size_t len, pw_hash* out, char* err, size_t errlen);

/* Writes "$7$<it>$<salt>$<hash>" (or "$6$...") for hash; out needs 256 bytes. */
int pw_hash_format(const pw_hash* h, char* out, size_t outlen);

/* Hashes password with a fresh random salt. type PW_SHA512_PBKDF2 uses iterations
 * (PW_MIN_ITERATIONS..PW_MAX_ITERATIONS). 0 on success, -1 with err. */
int pw_hash_make(pw_type type, unsigned iterations, const char* password, size_t pwlen,
                 pw_hash* out, char* err, size_t errlen);

/* 1 if password matches h, 0 if not; constant time in the hash comparison. */
int pw_hash_verify(const pw_hash* h, const char* password, size_t pwlen);

/* Parses a whole file held in memory; name is used in messages only. Returns NULL with
 * "<name>:<line>: <what>" in err on any problem. */
pwfile* pwfile_parse(const char* name, const char* data, size_t len, char* err, size_t errlen);

/* Reads and parses path (at most PW_MAX_FILE_BYTES). */
pwfile* pwfile_load(const char* path, char* err, size_t errlen);

void pwfile_free(pwfile* f);

size_t pwfile_count(const pwfile* f);
const char* pwfile_username(const pwfile* f, size_t i);
const pw_hash* pwfile_hash(const pwfile* f, size_t i);
/* index of username, or (size_t)-1 */
size_t pwfile_find(const pwfile* f, const char* username);

/* The parameters of the dummy verification for unknown users: those of the (lower)
 * median entry by cost (PBKDF2 iterations; $6$ counts as 0), $7$ with the default iterations
 * for an empty file. */
const pw_hash* pwfile_dummy(const pwfile* f);
/* index of the most expensive entry (the first of the highest cost), or (size_t)-1 for
 * an empty file */
size_t pwfile_costliest(const pwfile* f);
/* the line entry i came from (1-based), 0 past the end */
size_t pwfile_line(const pwfile* f, size_t i);

/* Checks a client's credentials: 1 allowed, 0 not. An unknown user (or a missing
 * password) costs a dummy verification with pwfile_dummy's parameters: what a typical
 * entry costs, not the most expensive one. The time this takes therefore differs from
 * a known user's whose entry costs more or less: a caller that must not reveal whether
 * a user exists hides it (the passwd plugin answers no earlier than its answer floor).
 * password may be NULL (no password: always 0). */
int pwfile_check(const pwfile* f, const char* username, const char* password, size_t pwlen);

/* 0 if name can be a username in a password file (1..PW_MAX_USERNAME bytes, no ':',
 * no control character, not starting with '#', no leading/trailing blank); else -1
 * with the reason. */
int pw_username_check(const char* name, char* err, size_t errlen);

#ifdef __cplusplus
}
#endif

#endif
