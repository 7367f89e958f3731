/* Damage for unit tests (include after <cmocka.h> and repo/internal.h): flips bit in one byte
 * of the pack that holds blob id in repository r (a directory, dir) at off, counted from the
 * blob's start when in_blob, else from the pack's. */
#ifndef CARIS_TEST_PACKFLIP_H
#define CARIS_TEST_PACKFLIP_H

#include <fcntl.h>
#include <stdbool.h>
#include <stdio.h>
#include <unistd.h>

static inline void flip_pack_bit(struct repo *r, const char *dir, const uint8_t id[32],
                                 bool in_blob, uint64_t off, uint8_t bit)
{
    struct ientry en;
    assert_true(repo_lookup_entry(r, id, &en));
    char name[80];
    pack_object_name(r->packs[en.pack].id, name, sizeof(name));
    char path[512];
    snprintf(path, sizeof(path), "%s/%s", dir, name);
    int fd = open(path, O_RDWR);
    assert_true(fd >= 0);
    off_t at = (off_t)(off + (in_blob ? en.off : 0));
    uint8_t b;
    assert_int_equal(pread(fd, &b, 1, at), 1);
    b ^= bit;
    assert_int_equal(pwrite(fd, &b, 1, at), 1);
    close(fd);
}

#endif
