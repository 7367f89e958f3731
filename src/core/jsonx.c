/* Public JSON names (see caris/jsonx.h). */
#include "caris/jsonx.h"

#include <ctype.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "caris/core.h"

char *jsonx_camel_key(const char *key, char *out, size_t n)
{
    size_t o = 0, i = 0;
    if (n == 0)
        return out;
    while (key[i] == '_' && o + 1 < n) /* leading underscores: not separators */
        out[o++] = key[i++];
    bool up = false;
    for (; key[i] && o + 1 < n; i++) {
        unsigned char c = (unsigned char)key[i];
        if (c == '_' && key[i + 1] && key[i + 1] != '_') {
            up = true;
            continue;
        }
        out[o++] = up ? (char)toupper(c) : (char)c;
        up = false;
    }
    out[o] = '\0';
    return out;
}

json_t *jsonx_public(json_t *doc)
{
    if (!doc)
        return NULL;
    if (json_is_array(doc)) {
        json_t *a = json_array();
        size_t i;
        json_t *v;
        json_array_foreach(doc, i, v) json_array_append_new(a, jsonx_public(v));
        return a;
    }
    if (!json_is_object(doc))
        return json_incref(doc);
    json_t *o = json_object();
    const char *k;
    json_t *v;
    json_object_foreach(doc, k, v)
    {
        char name[256];
        size_t kl = strlen(k);
        if (kl >= sizeof(name)) { /* no key of ours is this long: kept as it is */
            json_object_set_new(o, k, jsonx_public(v));
            continue;
        }
        jsonx_camel_key(k, name, sizeof(name));
        /* "fooBar" given as such wins over a "foo_bar" met in the same object */
        if (strcmp(name, k) != 0 && json_object_get(doc, name))
            continue;
        json_object_set_new(o, name, jsonx_public(v));
    }
    return o;
}

json_t *jsonx_text(const char *s)
{
    if (!s)
        return NULL;
    size_t n = strlen(s);
    if (str_is_utf8(s, n))
        return json_string(s);
    size_t cap = n * 4 + 8; /* every byte as \xNN at most */
    char *esc = xmalloc(cap);
    json_t *j = json_string(str_escape(s, n, esc, cap));
    free(esc);
    return j;
}
