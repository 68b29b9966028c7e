// clockshim: an LD_PRELOAD library that lets a test change the rate of a
// process's clocks while it runs, and make them jump forward.
//
// Why not libfaketime: Debian's redis-server is linked with jemalloc, and
// libfaketime's initialisation recurses through jemalloc's clock_gettime
// call and hangs the server (libfaketime issues #130, #327). This shim never
// allocates, never calls dlsym and reads the real clocks with the raw
// syscall, so it cannot recurse.
//
// Control: REDLOCK_CLOCK_CTL names a file of at least 16 bytes that the
// shim maps shared, read-only. The test writes, as native int64s:
//   [0] rate in parts per million (1000000: real time; 0 or less: real time)
//   [1] forward jump in nanoseconds, added to every faked clock
// A rate change takes effect from the moment it is written: faked time
// stays continuous (it only changes speed), per clock, so CLOCK_MONOTONIC
// never goes back.
//
// Faked: clock_gettime for CLOCK_REALTIME, _MONOTONIC, _MONOTONIC_RAW,
// _REALTIME_COARSE, _MONOTONIC_COARSE and _BOOTTIME; gettimeofday; time.
// CPU-time clocks are passed through.
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#define NCLOCKS 8

static volatile int64_t *ctl;         // [0] rate ppm, [1] jump ns
static int64_t last_real[NCLOCKS];    // real time of the last call, per clock
static int64_t fake_base[NCLOCKS];    // faked time at last_real, without the jump
static int started[NCLOCKS];
static int spin;                      // protects the three arrays

__attribute__((constructor)) static void clockshim_init(void) {
	const char *path = getenv("REDLOCK_CLOCK_CTL");
	if (path == NULL || *path == 0) {
		return;
	}
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		return;
	}
	void *m = mmap(NULL, 16, PROT_READ, MAP_SHARED, fd, 0);
	close(fd);
	if (m != MAP_FAILED) {
		ctl = (volatile int64_t *)m;
	}
}

static int faked(clockid_t clk) {
	switch (clk) {
	case CLOCK_REALTIME:
	case CLOCK_MONOTONIC:
	case CLOCK_MONOTONIC_RAW:
	case CLOCK_REALTIME_COARSE:
	case CLOCK_MONOTONIC_COARSE:
	case CLOCK_BOOTTIME:
		return clk < NCLOCKS;
	}
	return 0;
}

int clock_gettime(clockid_t clk, struct timespec *ts) {
	long r = syscall(SYS_clock_gettime, clk, ts);
	if (r != 0 || ctl == NULL || !faked(clk)) {
		return (int)r;
	}
	int64_t real = (int64_t)ts->tv_sec * 1000000000LL + ts->tv_nsec;
	int64_t rate = __atomic_load_n(&ctl[0], __ATOMIC_RELAXED);
	int64_t jump = __atomic_load_n(&ctl[1], __ATOMIC_RELAXED);
	if (rate <= 0) {
		rate = 1000000;
	}
	while (__atomic_exchange_n(&spin, 1, __ATOMIC_ACQUIRE)) {
	}
	if (!started[clk]) {
		started[clk] = 1;
		last_real[clk] = real;
		fake_base[clk] = real;
	}
	int64_t d = real - last_real[clk];
	if (d > 0) {
		// d * rate overflows int64 only after ~2.5 hours at 1000x.
		fake_base[clk] += d / 1000000 * rate + d % 1000000 * rate / 1000000;
		last_real[clk] = real;
	}
	int64_t out = fake_base[clk] + (jump > 0 ? jump : 0);
	__atomic_store_n(&spin, 0, __ATOMIC_RELEASE);
	ts->tv_sec = out / 1000000000LL;
	ts->tv_nsec = out % 1000000000LL;
	return 0;
}

// tv is declared non-null by glibc; tz is obsolete and ignored.
int gettimeofday(struct timeval *tv, void *tz) {
	(void)tz;
	struct timespec ts;
	int r = clock_gettime(CLOCK_REALTIME, &ts);
	if (r == 0) {
		tv->tv_sec = ts.tv_sec;
		tv->tv_usec = ts.tv_nsec / 1000;
	}
	return r;
}

time_t time(time_t *t) {
	struct timespec ts;
	if (clock_gettime(CLOCK_REALTIME, &ts) != 0) {
		return (time_t)-1;
	}
	if (t != NULL) {
		*t = ts.tv_sec;
	}
	return ts.tv_sec;
}
