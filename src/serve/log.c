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
