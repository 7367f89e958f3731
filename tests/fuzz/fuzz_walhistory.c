/* libFuzzer harness: caris_wal_history_parse and caris_lsn_parse
 * (src/services/wal_window.c): a timeline's .history file as archived from the server, and
 * the LSNs in it.
 *
 * Input: the .history file's bytes (not NUL-terminated, as read from the repository). Its
 * first line is also given to caris_lsn_parse. The entries must be as the grammar says
 * (parent timeline > 0). wal_window.c's repository functions are not reached: the symbols
 * they need are stubs (stubs.c) that abort. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "caris/walwindow.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *text = malloc(size ? size : 1);
    memcpy(text, data, size);
    struct caris_wal_switch *sw = NULL;
    size_t n = 0;
    struct err e = ERR_INIT;
    if (caris_wal_history_parse(text, size, "00000002.history", &sw, &n, &e) == 0) {
        for (size_t i = 0; i < n; i++)
            if (sw[i].parent == 0)
                abort();
    } else if (sw || n) {
        abort();
    }
    free(sw);
    const char *nl = memchr(text, '\n', size);
    size_t len = nl ? (size_t)(nl - text) : size;
    char *line = malloc(len + 1);
    memcpy(line, text, len);
    line[len] = '\0';
    uint64_t lsn;
    if (caris_lsn_parse(line, &lsn) == 0) {
        char again[32];
        uint64_t back;
        caris_lsn_format(lsn, again, sizeof(again));
        if (caris_lsn_parse(again, &back) != 0 || back != lsn)
            abort();
    }
    free(line);
    free(text);
    return 0;
}
