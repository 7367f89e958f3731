/* Database commands: backup database, restore database, test-restore (issue #3). */
#include "cli.h"

static int not_yet(const char *what)
{
    struct err e = ERR_INIT;
    err_set(&e, ERR_FAILURE, "see the Status section of the README", "not implemented yet: %s",
            what);
    return fail(&e);
}

int cmd_backup_database(struct globals *g, int argc, char **argv)
{
    (void)g;
    (void)argc;
    (void)argv;
    return not_yet("backup database");
}

int cmd_restore_database(struct globals *g, int argc, char **argv)
{
    (void)g;
    (void)argc;
    (void)argv;
    return not_yet("restore database");
}

int cmd_test_restore(struct globals *g, int argc, char **argv)
{
    (void)g;
    (void)argc;
    (void)argv;
    return not_yet("test-restore");
}
