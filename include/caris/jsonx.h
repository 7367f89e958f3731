/* JSON as an interface (docs/JSON.md): every document the CLI prints with --json and the
 * HTTP API returns names its keys in camelCase. Documents stored in a repository (snapshot
 * summaries, records) and local state files keep the names they are written with (a format
 * is a contract); the services' *_to_json give them as stored, and the two outputs (the
 * CLI's print_json, the API's respond) pass every document through jsonx_public, the one
 * place where names are made public. */
#ifndef CARIS_JSONX_H
#define CARIS_JSONX_H

#include <jansson.h>
#include <stddef.h>

/* The camelCase form of a snake_case key: "duration_ms" -> "durationMs", "path_b64" ->
 * "pathB64". A key already in camelCase is unchanged; leading underscores are kept. Writes
 * at most n bytes (NUL included); returns out. */
char *jsonx_camel_key(const char *key, char *out, size_t n);

/* A copy of doc (a new reference) with every object key, at any depth, in camelCase. NULL
 * for NULL. Two keys of one object that meet under one name keep the one spelled in
 * camelCase already. */
json_t *jsonx_public(json_t *doc);

/* A JSON string of a message (jansson refuses text that is not UTF-8, and json_pack then
 * gives NULL: the whole object is lost): s as it is when it is UTF-8, else with its bytes
 * escaped as str_escape does (\xNN). A message may carry bytes from outside: a path named in
 * the configuration, a server's reply. NULL for NULL. */
json_t *jsonx_text(const char *s);

#endif
