/* Libraries loaded when first used (caris/lazylib.h): each function the program calls is
 * defined here with the library's prototype (its header is included, so the compiler checks
 * each definition against it) and calls the library's function through a table filled by
 * dlopen/dlsym once per process. The program is linked without these libraries. */
#define CURL_DISABLE_TYPECHECK /* curl_easy_setopt is defined here, not called */
#define FUSE_USE_VERSION 314
#include "caris/lazylib.h"

#include <curl/curl.h>
#include <dlfcn.h>
#include <errno.h>
#include <fuse_lowlevel.h>
#include <libpq-fe.h>
#include <microhttpd.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifndef CARIS_SONAME_PQ
#define CARIS_SONAME_PQ "libpq.so.5"
#endif
#ifndef CARIS_SONAME_CURL
#define CARIS_SONAME_CURL "libcurl.so.4"
#endif
#ifndef CARIS_SONAME_MHD
#define CARIS_SONAME_MHD "libmicrohttpd.so.12"
#endif
#ifndef CARIS_SONAME_FUSE
#define CARIS_SONAME_FUSE "libfuse3.so.3"
#endif

/* F(ret, name, params, args): a function returning ret; V(name, params, args): one returning
 * nothing; D(ret, name, params): a variadic one, defined by hand below. */
#define PQ_FUNCS(F, V, D)                                                                          \
    V(PQclear, (PGresult * res), (res))                                                            \
    F(PQconninfoOption *, PQconndefaults, (void), ())                                              \
    F(PGconn *, PQconnectdbParams,                                                                 \
      (const char *const *keywords, const char *const *values, int expand_dbname),                 \
      (keywords, values, expand_dbname))                                                           \
    F(int, PQconnectionNeedsPassword, (const PGconn *conn), (conn))                                \
    V(PQconninfoFree, (PQconninfoOption * connOptions), (connOptions))                             \
    F(PQconninfoOption *, PQconninfoParse, (const char *conninfo, char **errmsg),                  \
      (conninfo, errmsg))                                                                          \
    F(int, PQconsumeInput, (PGconn * conn), (conn))                                                \
    F(char *, PQdb, (const PGconn *conn), (conn))                                                  \
    F(char *, PQerrorMessage, (const PGconn *conn), (conn))                                        \
    F(char *, PQescapeIdentifier, (PGconn * conn, const char *str, size_t len), (conn, str, len))  \
    F(char *, PQescapeLiteral, (PGconn * conn, const char *str, size_t len), (conn, str, len))     \
    F(PGresult *, PQexec, (PGconn * conn, const char *query), (conn, query))                       \
    F(PGresult *, PQexecParams,                                                                    \
      (PGconn * conn, const char *command, int nParams, const Oid *paramTypes,                     \
       const char *const *paramValues, const int *paramLengths, const int *paramFormats,           \
       int resultFormat),                                                                          \
      (conn, command, nParams, paramTypes, paramValues, paramLengths, paramFormats, resultFormat)) \
    V(PQfinish, (PGconn * conn), (conn))                                                           \
    F(int, PQflush, (PGconn * conn), (conn))                                                       \
    V(PQfreemem, (void *ptr), (ptr))                                                               \
    F(int, PQgetCopyData, (PGconn * conn, char **buffer, int async), (conn, buffer, async))        \
    F(PGresult *, PQgetResult, (PGconn * conn), (conn))                                            \
    F(int, PQgetisnull, (const PGresult *res, int tup_num, int field_num),                         \
      (res, tup_num, field_num))                                                                   \
    F(int, PQgetlength, (const PGresult *res, int tup_num, int field_num),                         \
      (res, tup_num, field_num))                                                                   \
    F(char *, PQgetvalue, (const PGresult *res, int tup_num, int field_num),                       \
      (res, tup_num, field_num))                                                                   \
    F(char *, PQhost, (const PGconn *conn), (conn))                                                \
    F(int, PQisBusy, (PGconn * conn), (conn))                                                      \
    F(int, PQnfields, (const PGresult *res), (res))                                                \
    F(int, PQntuples, (const PGresult *res), (res))                                                \
    F(PGPing, PQpingParams,                                                                        \
      (const char *const *keywords, const char *const *values, int expand_dbname),                 \
      (keywords, values, expand_dbname))                                                           \
    F(char *, PQport, (const PGconn *conn), (conn))                                                \
    F(int, PQputCopyData, (PGconn * conn, const char *buffer, int nbytes), (conn, buffer, nbytes)) \
    F(int, PQputCopyEnd, (PGconn * conn, const char *errormsg), (conn, errormsg))                  \
    F(char *, PQresultErrorField, (const PGresult *res, int fieldcode), (res, fieldcode))          \
    F(ExecStatusType, PQresultStatus, (const PGresult *res), (res))                                \
    F(int, PQsendQuery, (PGconn * conn, const char *query), (conn, query))                         \
    F(int, PQserverVersion, (const PGconn *conn), (conn))                                          \
    F(PQnoticeProcessor, PQsetNoticeProcessor, (PGconn * conn, PQnoticeProcessor proc, void *arg), \
      (conn, proc, arg))                                                                           \
    F(int, PQsocket, (const PGconn *conn), (conn))                                                 \
    F(ConnStatusType, PQstatus, (const PGconn *conn), (conn))                                      \
    F(char *, PQuser, (const PGconn *conn), (conn))

#define CURL_FUNCS(F, V, D)                                                                        \
    V(curl_easy_cleanup, (CURL * curl), (curl))                                                    \
    D(CURLcode, curl_easy_getinfo, (CURL * curl, CURLINFO info, ...))                              \
    F(CURL *, curl_easy_init, (void), ())                                                          \
    F(CURLcode, curl_easy_perform, (CURL * curl), (curl))                                          \
    V(curl_easy_reset, (CURL * curl), (curl))                                                      \
    D(CURLcode, curl_easy_setopt, (CURL * curl, CURLoption option, ...))                           \
    F(const char *, curl_easy_strerror, (CURLcode code), (code))                                   \
    V(curl_free, (void *p), (p))                                                                   \
    F(CURLcode, curl_global_init, (long flags), (flags))                                           \
    F(struct curl_slist *, curl_slist_append, (struct curl_slist * list, const char *data),        \
      (list, data))                                                                                \
    V(curl_slist_free_all, (struct curl_slist * list), (list))                                     \
    F(CURLU *, curl_url, (void), ())                                                               \
    V(curl_url_cleanup, (CURLU * handle), (handle))                                                \
    F(CURLUcode, curl_url_get, (CURLU * handle, CURLUPart what, char **part, unsigned int flags),  \
      (handle, what, part, flags))                                                                 \
    F(CURLUcode, curl_url_set,                                                                     \
      (CURLU * handle, CURLUPart what, const char *part, unsigned int flags),                      \
      (handle, what, part, flags))

#define MHD_FUNCS(F, V, D)                                                                         \
    F(enum MHD_Result, MHD_add_connection,                                                         \
      (struct MHD_Daemon * daemon, MHD_socket client_socket, const struct sockaddr *addr,          \
       socklen_t addrlen),                                                                         \
      (daemon, client_socket, addr, addrlen))                                                      \
    F(enum MHD_Result, MHD_add_response_header,                                                    \
      (struct MHD_Response * response, const char *header, const char *content),                   \
      (response, header, content))                                                                 \
    F(struct MHD_Response *, MHD_create_response_from_buffer,                                      \
      (size_t size, void *buffer, enum MHD_ResponseMemoryMode mode), (size, buffer, mode))         \
    V(MHD_destroy_response, (struct MHD_Response * response), (response))                          \
    D(const union MHD_ConnectionInfo *, MHD_get_connection_info,                                   \
      (struct MHD_Connection * connection, enum MHD_ConnectionInfoType info_type, ...))            \
    F(int, MHD_get_connection_values,                                                              \
      (struct MHD_Connection * connection, enum MHD_ValueKind kind, MHD_KeyValueIterator iterator, \
       void *iterator_cls),                                                                        \
      (connection, kind, iterator, iterator_cls))                                                  \
    D(const union MHD_DaemonInfo *, MHD_get_daemon_info,                                           \
      (struct MHD_Daemon * daemon, enum MHD_DaemonInfoType info_type, ...))                        \
    F(const char *, MHD_lookup_connection_value,                                                   \
      (struct MHD_Connection * connection, enum MHD_ValueKind kind, const char *key),              \
      (connection, kind, key))                                                                     \
    F(enum MHD_Result, MHD_lookup_connection_value_n,                                              \
      (struct MHD_Connection * connection, enum MHD_ValueKind kind, const char *key,               \
       size_t key_size, const char **value_ptr, size_t *value_size_ptr),                           \
      (connection, kind, key, key_size, value_ptr, value_size_ptr))                                \
    F(enum MHD_Result, MHD_queue_response,                                                         \
      (struct MHD_Connection * connection, unsigned int status_code,                               \
       struct MHD_Response *response),                                                             \
      (connection, status_code, response))                                                         \
    D(struct MHD_Daemon *, MHD_start_daemon,                                                       \
      (unsigned int flags, uint16_t port, MHD_AcceptPolicyCallback apc, void *apc_cls,             \
       MHD_AccessHandlerCallback dh, void *dh_cls, ...))                                           \
    V(MHD_stop_daemon, (struct MHD_Daemon * daemon), (daemon))

#define FUSE_FUNCS(F, V, D)                                                                        \
    F(size_t, fuse_add_direntry,                                                                   \
      (fuse_req_t req, char *buf, size_t bufsize, const char *name, const struct stat *stbuf,      \
       off_t off),                                                                                 \
      (req, buf, bufsize, name, stbuf, off))                                                       \
    V(fuse_opt_free_args, (struct fuse_args * args), (args))                                       \
    F(int, fuse_reply_attr, (fuse_req_t req, const struct stat *attr, double attr_timeout),        \
      (req, attr, attr_timeout))                                                                   \
    F(int, fuse_reply_buf, (fuse_req_t req, const char *buf, size_t size), (req, buf, size))       \
    F(int, fuse_reply_entry, (fuse_req_t req, const struct fuse_entry_param *e), (req, e))         \
    F(int, fuse_reply_err, (fuse_req_t req, int err), (req, err))                                  \
    F(int, fuse_reply_open, (fuse_req_t req, const struct fuse_file_info *fi), (req, fi))          \
    F(int, fuse_reply_readlink, (fuse_req_t req, const char *link), (req, link))                   \
    F(int, fuse_reply_xattr, (fuse_req_t req, size_t count), (req, count))                         \
    F(void *, fuse_req_userdata, (fuse_req_t req), (req))                                          \
    V(fuse_session_destroy, (struct fuse_session * se), (se))                                      \
    F(int, fuse_session_exited, (struct fuse_session * se), (se))                                  \
    F(int, fuse_session_fd, (struct fuse_session * se), (se))                                      \
    F(int, fuse_session_mount, (struct fuse_session * se, const char *mountpoint),                 \
      (se, mountpoint))                                                                            \
    F(struct fuse_session *, fuse_session_new,                                                     \
      (struct fuse_args * args, const struct fuse_lowlevel_ops *op, size_t op_size,                \
       void *userdata),                                                                            \
      (args, op, op_size, userdata))                                                               \
    V(fuse_session_process_buf, (struct fuse_session * se, const struct fuse_buf *buf), (se, buf)) \
    F(int, fuse_session_receive_buf, (struct fuse_session * se, struct fuse_buf * buf), (se, buf)) \
    V(fuse_session_unmount, (struct fuse_session * se), (se))                                      \
    V(fuse_set_log_func, (fuse_log_func_t func), (func))

/* the tables: one function pointer per function */
#define TAB_F(ret, name, params, args) ret(*name) params;
#define TAB_V(name, params, args) void(*name) params;
#define TAB_D(ret, name, params) ret(*name) params;
static struct {
    PQ_FUNCS(TAB_F, TAB_V, TAB_D)
} pq;
static struct {
    CURL_FUNCS(TAB_F, TAB_V, TAB_D)
} cu;
static struct {
    MHD_FUNCS(TAB_F, TAB_V, TAB_D)
} mhd;
static struct {
    FUSE_FUNCS(TAB_F, TAB_V, TAB_D)
} fu;

/* the symbols: a name and where its address goes */
struct sym {
    const char *name;
    void *slot; /* a function pointer's address: the address is copied in (no type pun) */
};
#define SYM_F(ret, name, params, args) {#name, &TABLE.name},
#define SYM_V(name, params, args) {#name, &TABLE.name},
#define SYM_D(ret, name, params) {#name, &TABLE.name},
#define TABLE pq
static const struct sym pq_syms[] = {PQ_FUNCS(SYM_F, SYM_V, SYM_D)};
#undef TABLE
#define TABLE cu
static const struct sym cu_syms[] = {CURL_FUNCS(SYM_F, SYM_V, SYM_D)};
#undef TABLE
#define TABLE mhd
static const struct sym mhd_syms[] = {MHD_FUNCS(SYM_F, SYM_V, SYM_D)};
#undef TABLE
#define TABLE fu
static const struct sym fu_syms[] = {FUSE_FUNCS(SYM_F, SYM_V, SYM_D)};
#undef TABLE

struct lib {
    const char *soname, *package, *what;
    const struct sym *syms;
    size_t nsyms;
    pthread_once_t once;
    int ok;
    char err[512];
};
#define NSYMS(a) (sizeof(a) / sizeof((a)[0]))
static struct lib libs[LAZYLIB_COUNT] = {
    [LAZYLIB_PQ] = {CARIS_SONAME_PQ, "libpq5", "PostgreSQL connections", pq_syms, NSYMS(pq_syms),
                    PTHREAD_ONCE_INIT, 0, ""},
    [LAZYLIB_CURL] = {CARIS_SONAME_CURL, "libcurl4", "S3 repositories and notifications", cu_syms,
                      NSYMS(cu_syms), PTHREAD_ONCE_INIT, 0, ""},
    [LAZYLIB_MHD] = {CARIS_SONAME_MHD, "libmicrohttpd12", "the HTTP API", mhd_syms, NSYMS(mhd_syms),
                     PTHREAD_ONCE_INIT, 0, ""},
    [LAZYLIB_FUSE] = {CARIS_SONAME_FUSE, "libfuse3-3", "mount", fu_syms, NSYMS(fu_syms),
                      PTHREAD_ONCE_INIT, 0, ""},
};

static void load(struct lib *l)
{
    /* RTLD_LOCAL: its symbols are found through the table only */
    void *h = dlopen(l->soname, RTLD_NOW | RTLD_LOCAL);
    if (!h) {
        const char *why = dlerror();
        snprintf(l->err, sizeof(l->err), "%s", why ? why : "unknown error");
        return;
    }
    for (size_t i = 0; i < l->nsyms; i++) {
        dlerror();
        void *p = dlsym(h, l->syms[i].name);
        if (!p) {
            snprintf(l->err, sizeof(l->err), "%s has no function %s", l->soname, l->syms[i].name);
            return; /* the handle stays open: dlclose would only hide it from leak reports */
        }
        memcpy(l->syms[i].slot, &p, sizeof(p));
    }
    l->ok = 1;
}

static void load_pq(void)
{
    load(&libs[LAZYLIB_PQ]);
}
static void load_curl(void)
{
    load(&libs[LAZYLIB_CURL]);
}
static void load_mhd(void)
{
    load(&libs[LAZYLIB_MHD]);
}
static void load_fuse(void)
{
    load(&libs[LAZYLIB_FUSE]);
}
static void (*const loaders[LAZYLIB_COUNT])(void) = {load_pq, load_curl, load_mhd, load_fuse};

static int ensure(enum lazylib lib)
{
    pthread_once(&libs[lib].once, loaders[lib]);
    return libs[lib].ok;
}

int lazylib_load(enum lazylib lib, struct err *e)
{
    if (ensure(lib))
        return 0;
    const struct lib *l = &libs[lib];
    return err_set(e, ERR_CONFIG,
                   "install it (./scripts/install-deps.sh installs every library caris-backup "
                   "uses), or check LD_LIBRARY_PATH",
                   "cannot load %s (Debian package %s), needed for %s: %s", l->soname, l->package,
                   l->what, l->err);
}

/* a call whose caller did not load the library first, and it cannot be: a bug (see the
 * header); says what is missing and aborts */
static void need(enum lazylib lib)
{
    if (ensure(lib))
        return;
    fprintf(stderr, "fatal: cannot load %s (Debian package %s), needed for %s: %s\n",
            libs[lib].soname, libs[lib].package, libs[lib].what, libs[lib].err);
    abort();
}

/* the functions themselves */
#define DEF_F(ret, name, params, args)                                                             \
    ret name params                                                                                \
    {                                                                                              \
        need(LIB);                                                                                 \
        return TABLE.name args;                                                                    \
    }
#define DEF_V(name, params, args)                                                                  \
    void name params                                                                               \
    {                                                                                              \
        need(LIB);                                                                                 \
        TABLE.name args;                                                                           \
    }
#define DEF_D(ret, name, params) /* by hand, below */
#define LIB LAZYLIB_PQ
#define TABLE pq
PQ_FUNCS(DEF_F, DEF_V, DEF_D)
#undef LIB
#undef TABLE
#define LIB LAZYLIB_CURL
#define TABLE cu
CURL_FUNCS(DEF_F, DEF_V, DEF_D)
#undef LIB
#undef TABLE
#define LIB LAZYLIB_MHD
#define TABLE mhd
MHD_FUNCS(DEF_F, DEF_V, DEF_D)
#undef LIB
#undef TABLE
#define LIB LAZYLIB_FUSE
#define TABLE fu
FUSE_FUNCS(DEF_F, DEF_V, DEF_D)
#undef LIB
#undef TABLE

/* curl_easy_setopt takes one argument after the option, whose type the option's number says
 * (CURLOPTTYPE_*, as libcurl reads it) */
CURLcode curl_easy_setopt(CURL *curl, CURLoption option, ...)
{
    need(LAZYLIB_CURL);
    va_list ap;
    va_start(ap, option);
    CURLcode rc;
    if (option < CURLOPTTYPE_OBJECTPOINT)
        rc = cu.curl_easy_setopt(curl, option, va_arg(ap, long));
    else if (option < CURLOPTTYPE_FUNCTIONPOINT)
        rc = cu.curl_easy_setopt(curl, option, va_arg(ap, void *));
    else if (option < CURLOPTTYPE_OFF_T)
        rc = cu.curl_easy_setopt(curl, option, va_arg(ap, void (*)(void)));
    else if (option < CURLOPTTYPE_BLOB)
        rc = cu.curl_easy_setopt(curl, option, va_arg(ap, curl_off_t));
    else
        rc = cu.curl_easy_setopt(curl, option, va_arg(ap, void *));
    va_end(ap);
    return rc;
}

/* curl_easy_getinfo: always a pointer to where the answer goes */
CURLcode curl_easy_getinfo(CURL *curl, CURLINFO info, ...)
{
    need(LAZYLIB_CURL);
    va_list ap;
    va_start(ap, info);
    CURLcode rc = cu.curl_easy_getinfo(curl, info, va_arg(ap, void *));
    va_end(ap);
    return rc;
}

/* libmicrohttpd's information calls take nothing after the type (the "..." is for types
 * that never came) */
const union MHD_ConnectionInfo *MHD_get_connection_info(struct MHD_Connection *connection,
                                                        enum MHD_ConnectionInfoType info_type, ...)
{
    need(LAZYLIB_MHD);
    return mhd.MHD_get_connection_info(connection, info_type);
}

const union MHD_DaemonInfo *MHD_get_daemon_info(struct MHD_Daemon *daemon,
                                                enum MHD_DaemonInfoType info_type, ...)
{
    need(LAZYLIB_MHD);
    return mhd.MHD_get_daemon_info(daemon, info_type);
}

/* MHD_start_daemon: the program gives its options as one MHD_OPTION_ARRAY (src/daemon/api.c),
 * the only form forwarded here; any other is refused (NULL, errno EINVAL) */
struct MHD_Daemon *MHD_start_daemon(unsigned int flags, uint16_t port, MHD_AcceptPolicyCallback apc,
                                    void *apc_cls, MHD_AccessHandlerCallback dh, void *dh_cls, ...)
{
    need(LAZYLIB_MHD);
    va_list ap;
    va_start(ap, dh_cls);
    int opt = va_arg(ap, int);
    struct MHD_OptionItem *items = NULL;
    if (opt == MHD_OPTION_ARRAY) {
        items = va_arg(ap, struct MHD_OptionItem *);
        opt = va_arg(ap, int);
    }
    va_end(ap);
    if (opt != MHD_OPTION_END) {
        errno = EINVAL;
        return NULL;
    }
    if (!items)
        return mhd.MHD_start_daemon(flags, port, apc, apc_cls, dh, dh_cls, MHD_OPTION_END);
    return mhd.MHD_start_daemon(flags, port, apc, apc_cls, dh, dh_cls, MHD_OPTION_ARRAY, items,
                                MHD_OPTION_END);
}
