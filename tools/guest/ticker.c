/*
 * ticker: the snapext test guest's "is my RAM intact?" probe.
 *
 * The counter lives only in this process's memory.  After a memory snapshot
 * is restored it continues from where it was; after a cold boot (or a
 * disk-only snapshot) it starts again from 0.  Tests tell the two apart by
 * reading the serial console or /run/tick.
 *
 * Every 100 ms it prints "TICK <n> <monotonic_ms>\n" to the serial console
 * and publishes <n> in /run/tick, then increments n.  The first line is
 * "TICK 0 ...".
 *
 * Built with gcc -static -O2; only libc, no stdio buffering on the console.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define PERIOD_NS 100000000LL
#define NSEC 1000000000LL

#define CONSOLE "/dev/ttyS0"
#define TICK_FILE "/run/tick"
#define TICK_TMP "/run/.tick.tmp"

static long long ts_ns(const struct timespec *ts)
{
	return (long long)ts->tv_sec * NSEC + ts->tv_nsec;
}

static struct timespec ns_ts(long long ns)
{
	struct timespec ts = { .tv_sec = ns / NSEC, .tv_nsec = ns % NSEC };
	return ts;
}

static void write_all(int fd, const char *buf, size_t len)
{
	while (len > 0) {
		ssize_t r = write(fd, buf, len);
		if (r < 0) {
			if (errno == EINTR)
				continue;
			return; /* a lost console line must never stop the ticker */
		}
		buf += r;
		len -= (size_t)r;
	}
}

/*
 * Write to a temp file and rename it, so a concurrent reader (guest-exec
 * "cat /run/tick") never sees an empty or half-written file.
 */
static void publish(unsigned long long n)
{
	char buf[32];
	int len = snprintf(buf, sizeof(buf), "%llu\n", n);
	int fd = open(TICK_TMP, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (fd < 0)
		return;
	write_all(fd, buf, (size_t)len);
	close(fd);
	rename(TICK_TMP, TICK_FILE);
}

int main(void)
{
	/* O_NOCTTY: PID 1's children must not grab the serial line as their
	 * controlling terminal. */
	int con = open(CONSOLE, O_WRONLY | O_NOCTTY | O_CLOEXEC);
	if (con < 0)
		con = STDOUT_FILENO;

	unsigned long long n = 0;
	struct timespec now;
	clock_gettime(CLOCK_MONOTONIC, &now);
	long long deadline = ts_ns(&now);

	for (;;) {
		clock_gettime(CLOCK_MONOTONIC, &now);
		char line[64];
		int len = snprintf(line, sizeof(line), "TICK %llu %lld\n", n,
				   ts_ns(&now) / 1000000);
		write_all(con, line, (size_t)len);
		publish(n);
		n++;

		/*
		 * Absolute deadlines keep the ticks on a fixed 100 ms grid
		 * instead of drifting by the loop's own run time.  If we fell
		 * more than a period behind (vCPU starved under TCG, VM paused),
		 * skip the missed slots rather than firing a burst of
		 * catch-up ticks.
		 */
		deadline += PERIOD_NS;
		clock_gettime(CLOCK_MONOTONIC, &now);
		long long now_ns = ts_ns(&now);
		if (now_ns >= deadline)
			deadline += ((now_ns - deadline) / PERIOD_NS + 1) * PERIOD_NS;

		struct timespec dl = ns_ts(deadline);
		while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &dl,
				       NULL) == EINTR)
			;
	}
}
