/* http_get.h — what the metrics tests share: one HTTP/1.0 request to the
 * endpoint over loopback. */
#ifndef FKD_TEST_HTTP_GET_H
#define FKD_TEST_HTTP_GET_H

#include <stddef.h>

/* method path over a fresh connection to 127.0.0.1:port; the server closes
 * after its answer, so the response is everything read (5 s at most).
 * *status gets the HTTP status, body (cap bytes, NUL-terminated) what
 * follows the headers. 0, or -1 when no HTTP response came. */
int test_http_request(int *status, char *body, size_t cap, int port, const char *method,
                      const char *path);

#endif
