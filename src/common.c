#include "mmembed/common.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

int mm_errf(char *err, size_t errlen, int code, const char *fmt, ...)
{
    if (err && errlen) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, errlen, fmt, ap);
        va_end(ap);
    }
    return code;
}

int mm_status_http(int code)
{
    switch (code) {
    case MM_OK: return 200;
    case MM_E_INVALID: return 400;
    case MM_E_NOTFOUND: return 404;
    case MM_E_TOOBIG: return 413;
    case MM_E_UNSUPPORTED: return 415;
    case MM_E_UNPROCESSABLE: return 422;
    case MM_E_TIMEOUT: return 422;
    case MM_E_AGAIN: return 503;
    default: return 500;
    }
}

const char *mm_path_last(const char *path, int *len)
{
    size_t end = strlen(path);
    while (end > 1 && path[end - 1] == '/')
        end--;
    size_t beg = end;
    while (beg > 0 && path[beg - 1] != '/')
        beg--;
    *len = (int)(end - beg);
    return path + beg;
}

int64_t mm_now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

int64_t mm_wall_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}
