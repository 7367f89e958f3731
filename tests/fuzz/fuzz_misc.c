/* libFuzzer harness: small parsers of outside text, chosen by the first byte.
 *   0: time_parse_iso (src/core/core.c): times in snapshots, records, audit logs, API queries
 *   1: b64_decode (src/core/core.c): "_b64" fields of manifests
 *   2: str_escape and str_is_utf8 (src/core/core.c): names from file systems and archives
 *   3: caris_duration_parse (src/services/retention.c): --keep-within, API parameters
 *   4: caris_time_parse (src/services/retention.c) in UTC and in Europe/Berlin: --time, --before
 * The rest of the input is the text (NUL-terminated copy; for 2 the raw bytes too). The
 * repository functions retention.c references are stubs (stubs.c). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "caris/core.h"
#include "caris/retention.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1 || size > 4096)
        return 0;
    int which = data[0] % 5;
    data++;
    size--;
    char *s = malloc(size + 1);
    memcpy(s, data, size);
    s[size] = '\0';
    struct err e = ERR_INIT;
    switch (which) {
    case 0: {
        int64_t ns;
        if (time_parse_iso(s, &ns) == 0) {
            char out[64];
            time_format_iso(ns, out, sizeof(out));
        }
        break;
    }
    case 1: {
        uint8_t *raw;
        size_t n;
        if (b64_decode(s, &raw, &n) == 0) {
            if (n > size)
                abort();
            (void)memchr(raw, 0, n);
            free(raw);
        }
        break;
    }
    case 2: {
        static const size_t sizes[] = {0, 7, 8, 9, 16, 96, 1024};
        for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
            char *out = malloc(sizes[i] ? sizes[i] : 1);
            str_escape((const char *)data, size, out, sizes[i]);
            if (sizes[i] && strlen(out) >= sizes[i])
                abort();
            free(out);
        }
        (void)str_is_utf8((const char *)data, size);
        break;
    }
    case 3: {
        struct caris_duration d;
        (void)caris_duration_parse(s, &d, &e);
        break;
    }
    default: {
        int64_t ns;
        (void)caris_time_parse(s, "UTC", &ns, &e);
        (void)caris_time_parse(s, "Europe/Berlin", &ns, &e);
        break;
    }
    }
    free(s);
    return 0;
}
