#include "mmembed/log.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

static int log_fd = 2;
static int log_level = MM_LOG_INFO;
static char log_path[4096];
static char log_role[32] = "mmembed";

static const char *level_names[] = {"error", "warn", "info", "debug"};

int mm_log_level_parse(const char *s)
{
    for (int i = 0; i < (int)MM_ARRAY_LEN(level_names); i++)
        if (strcmp(s, level_names[i]) == 0) return i;
    return -1;
}

int mm_log_open(const char *path, int level)
{
    log_level = level;
    if (!path || strcmp(path, "-") == 0 || path[0] == '\0') {
        log_path[0] = '\0';
        log_fd = 2;
        return MM_OK;
    }
    snprintf(log_path, sizeof log_path, "%s", path);
    return mm_log_reopen();
}

int mm_log_reopen(void)
{
    if (!log_path[0]) return MM_OK;
    int fd = open(log_path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0640);
    if (fd < 0) return MM_ERR;
    if (log_fd > 2) {
        /* keep the same descriptor number so forked children follow */
        dup3(fd, log_fd, O_CLOEXEC);
        close(fd);
    } else {
        log_fd = fd;
    }
    return MM_OK;
}

void mm_log_set_role(const char *role)
{
    snprintf(log_role, sizeof log_role, "%s", role);
}

int mm_log_enabled(int level)
{
    return level <= log_level;
}

void mm_log(int level, const char *fmt, ...)
{
    if (level > log_level) return;
    int saved = errno;
    char line[2048];
    struct timeval tv;
    struct tm tm;
    gettimeofday(&tv, NULL);
    gmtime_r(&tv.tv_sec, &tm);
    int n = snprintf(line, sizeof line, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ [%s] [%s pid %d] ",
                     tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min,
                     tm.tm_sec, (int)(tv.tv_usec / 1000), level_names[level], log_role, (int)getpid());
    va_list ap;
    va_start(ap, fmt);
    int m = vsnprintf(line + n, sizeof line - n - 1, fmt, ap);
    va_end(ap);
    if (m < 0) m = 0;
    n += m;
    if (n > (int)sizeof line - 2) n = sizeof line - 2;
    line[n++] = '\n';
    /* one write() per line: O_APPEND keeps lines from several processes whole */
    ssize_t w = write(log_fd, line, n);
    (void)w;
    errno = saved;
}

/* civil date from days since 1970-01-01 (H. Hinnant's algorithm): gmtime_r
 * is not async-signal-safe */
static void civil(long z, int *y, int *m, int *d)
{
    z += 719468;
    long era = (z >= 0 ? z : z - 146096) / 146097;
    long doe = z - era * 146097;
    long yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    long doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    long mp = (5 * doy + 2) / 153;
    *d = (int)(doy - (153 * mp + 2) / 5 + 1);
    *m = (int)(mp < 10 ? mp + 3 : mp - 9);
    *y = (int)(yoe + era * 400 + (*m <= 2));
}

static char *put_num(char *d, long v, int width)
{
    char t[24];
    int n = 0;
    do t[n++] = (char)('0' + v % 10); while ((v /= 10) && n < 23);
    while (n < width) t[n++] = '0';
    while (n) *d++ = t[--n];
    return d;
}

static char *put_s(char *d, const char *s, const char *end)
{
    while (*s && d < end) *d++ = *s++;
    return d;
}

void mm_log_signal_safe(int level, const char *msg)
{
    if (level > log_level) return;
    char line[512], *d = line, *end = line + sizeof line - 1;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    int y, mo, da;
    long days = (long)(ts.tv_sec / 86400), sod = (long)(ts.tv_sec % 86400);
    civil(days, &y, &mo, &da);
    d = put_num(d, y, 4), *d++ = '-', d = put_num(d, mo, 2), *d++ = '-', d = put_num(d, da, 2), *d++ = 'T';
    d = put_num(d, sod / 3600, 2), *d++ = ':', d = put_num(d, sod / 60 % 60, 2), *d++ = ':';
    d = put_num(d, sod % 60, 2), *d++ = '.', d = put_num(d, ts.tv_nsec / 1000000, 3);
    d = put_s(d, "Z [", end), d = put_s(d, level_names[level], end), d = put_s(d, "] [", end);
    d = put_s(d, log_role, end), d = put_s(d, " pid ", end), d = put_num(d, (long)getpid(), 1);
    d = put_s(d, "] ", end), d = put_s(d, msg, end);
    *d++ = '\n';
    ssize_t w = write(log_fd, line, (size_t)(d - line));
    (void)w;
}
