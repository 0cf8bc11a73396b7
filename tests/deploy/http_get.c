/* http_get.c — see http_get.h. */
#include "http_get.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#define RAW_MAX (256 * 1024) /* the whole response, headers included */

static int connect_loopback(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0) return -1;
    struct timeval tv = {.tv_sec = 5};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0) {
        close(fd);
        return -1;
    }
    return fd;
}

int test_http_request(int *status, char *body, size_t cap, int port, const char *method,
                      const char *path)
{
    static char raw[RAW_MAX];
    int fd = connect_loopback(port);
    if (fd < 0) return -1;
    char req[256];
    int n = snprintf(req, sizeof req, "%s %s HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n", method, path);
    if (n < 0 || n >= (int)sizeof req || write(fd, req, (size_t)n) != n) {
        close(fd);
        return -1;
    }
    size_t len = 0;
    ssize_t got;
    while (len < sizeof raw - 1 && (got = read(fd, raw + len, sizeof raw - 1 - len)) > 0)
        len += (size_t)got;
    close(fd);
    raw[len] = '\0';
    if (sscanf(raw, "HTTP/1.%*d %d", status) != 1) return -1;
    const char *b = strstr(raw, "\r\n\r\n");
    snprintf(body, cap, "%s", b ? b + 4 : "");
    return 0;
}
