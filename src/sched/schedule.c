/* The configured backup schedules: see include/caris/schedule.h. */
#include "caris/schedule.h"

#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "caris/core.h"

/* The seed's Backup Strategy. */
static const struct {
    const char *name, *variable, *backup_type, *dflt;
} SCHEDULES[SCHEDULE_COUNT] = {
    {"daily", "BACKUP_SCHEDULE_DAILY", "incremental", "0 3 * * *"},
    {"weekly", "BACKUP_SCHEDULE_WEEKLY", "full", "0 2 * * 0"},
    {"monthly", "BACKUP_SCHEDULE_MONTHLY", "full", "0 1 1 * *"},
};

bool schedule_is_off(const char *text)
{
    while (*text == ' ' || *text == '\t')
        text++;
    size_t n = strlen(text);
    while (n && (text[n - 1] == ' ' || text[n - 1] == '\t'))
        n--;
    return n == 3 && strncasecmp(text, "off", 3) == 0;
}

int schedule_tz_load(const char *tz_name, enum err_code code, const char *what, struct tz **out,
                     struct err *e)
{
    if (!tz_name || !*tz_name) {
        /* TZ is configuration too */
        if (tz_load_local(out, e) != 0) {
            if (e->code == ERR_NOT_FOUND || e->code == ERR_DAMAGE)
                e->code = ERR_CONFIG;
            return -1;
        }
        return 0;
    }
    if (tz_load(tz_name, out, e) != 0) {
        /* an unknown zone, or a path to something that is not a zone file */
        if (e->code == ERR_NOT_FOUND || e->code == ERR_DAMAGE)
            e->code = code;
        return err_wrap(e, "%s", what);
    }
    return 0;
}

int schedule_config_load(const struct config *c, const char *tz_name, struct schedule_config *s,
                         struct err *e)
{
    memset(s, 0, sizeof(*s));
    for (int i = 0; i < SCHEDULE_COUNT; i++) {
        struct schedule *it = &s->items[i];
        it->name = SCHEDULES[i].name;
        it->variable = SCHEDULES[i].variable;
        it->backup_type = SCHEDULES[i].backup_type;
        const char *v = config_get(c, it->variable);
        if (!v)
            v = SCHEDULES[i].dflt;
        if (schedule_is_off(v)) {
            snprintf(it->text, sizeof(it->text), "off");
            continue;
        }
        if (cron_parse(v, &it->cron, e) != 0) {
            e->code = ERR_CONFIG;
            return err_wrap(e, "%s", it->variable);
        }
        it->enabled = true;
        snprintf(it->text, sizeof(it->text), "%s", v);
    }
    if (tz_name)
        return schedule_tz_load(tz_name, ERR_USAGE, "--tz", &s->tz, e);
    return schedule_tz_load(config_get(c, "BACKUP_TZ"), ERR_CONFIG, "BACKUP_TZ", &s->tz, e);
}

void schedule_config_free(struct schedule_config *s)
{
    tz_free(s->tz);
    memset(s, 0, sizeof(*s));
}

int schedule_next_runs(const struct cron_expr *c, const struct tz *z, int64_t after, size_t n,
                       int64_t *out, struct err *e)
{
    for (size_t i = 0; i < n; i++) {
        if (cron_next(c, z, after, &out[i], e) != 0)
            return -1;
        after = out[i];
    }
    return 0;
}

int schedule_next_json(const struct schedule_config *s, int64_t after, size_t n, json_t **out,
                       struct err *e)
{
    char iso[48];
    tz_format_iso(s->tz, after, iso, sizeof(iso));
    json_t *j = json_pack("{s:s, s:s}", "tz", tz_name(s->tz), "from", iso);
    json_t *arr = json_array(), *first = json_object();
    int64_t *times = xcalloc(n ? n : 1, sizeof(*times));
    int rc = 0;
    for (int i = 0; i < SCHEDULE_COUNT && rc == 0; i++) {
        const struct schedule *it = &s->items[i];
        json_t *next = json_array();
        if (it->enabled && (rc = schedule_next_runs(&it->cron, s->tz, after, n, times, e)) == 0) {
            for (size_t k = 0; k < n; k++) {
                tz_format_iso(s->tz, times[k], iso, sizeof(iso));
                json_array_append_new(next, json_string(iso));
            }
        }
        json_object_set(first, it->name,
                        json_array_size(next) ? json_array_get(next, 0) : json_null());
        json_array_append_new(arr,
                              json_pack("{s:s, s:s, s:s, s:s, s:b, s:o}", "name", it->name,
                                        "variable", it->variable, "type", it->backup_type, "cron",
                                        it->text, "enabled", it->enabled, "next", next));
    }
    free(times);
    json_object_set_new(j, "schedules", arr);
    json_object_set_new(j, "nextRuns", first);
    if (rc != 0) {
        json_decref(j);
        return -1;
    }
    *out = j;
    return 0;
}
