/* The dashboard's files, built into the binary (dashboard/, embedded by dashboard/embed.py). */
#ifndef CARIS_DASHBOARD_H
#define CARIS_DASHBOARD_H

#include <stddef.h>

struct caris_asset {
    const char *name; /* "index.html", "app.js", "app.css" */
    const char *type; /* Content-Type */
    const unsigned char *data;
    size_t size;
};
extern const struct caris_asset caris_dashboard_assets[]; /* ends with a NULL name */

#endif
