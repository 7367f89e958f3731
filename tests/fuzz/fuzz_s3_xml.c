/* libFuzzer harness: xml_text, the XML reader of S3 responses in src/storage/s3.c (a static
 * function: the file is included), walked over a document the way s3_list reads a
 * ListObjectsV2 page (Contents, Key, Size, IsTruncated, NextContinuationToken) and fail()
 * an error document (Code, Region).
 *
 * Input: the response body, in a buffer of exactly its size (a body is not NUL-terminated). */
#include "../../src/storage/s3.c"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *doc = malloc(size ? size : 1);
    memcpy(doc, data, size);
    const char *p = doc;
    for (int i = 0; p && i < 1000; i++) {
        const char *after = NULL;
        char *item = xml_text(p, size - (size_t)(p - doc), "Contents", &after);
        if (!item)
            break;
        if (after < p || after > doc + size)
            abort();
        char *key = xml_text(item, strlen(item), "Key", NULL);
        char *sz = xml_text(item, strlen(item), "Size", NULL);
        free(key);
        free(sz);
        free(item);
        p = after;
    }
    static const char *const tags[] = {"IsTruncated", "NextContinuationToken", "Code", "Region"};
    for (size_t i = 0; i < sizeof(tags) / sizeof(tags[0]); i++)
        free(xml_text(doc, size, tags[i], NULL));
    free(doc);
    return 0;
}
