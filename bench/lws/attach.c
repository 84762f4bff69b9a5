/*
 * lwsys's side-by-side bench (scripts/bench --vs-lws): upstream's foreign
 * thread attach. A context whose lws_system_ops .attach takes a mutex
 * around __lws_system_attach (as the lws_system docs ask a platform to);
 * T foreign threads attach PER callbacks each for OPERATIONAL while the
 * main thread runs lws_service. Prints the median callbacks/s of RUNS runs,
 * from the threads' release to the last callback, as one JSON line.
 *
 * Usage: attach [threads] [per-thread] [runs]
 * Our own program, built against Debian's libwebsockets-dev (4.1.6).
 */
#include <libwebsockets.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static struct lws_context *cx;
static pthread_barrier_t go;
static int per;
static long ran, want; /* loop thread only */
static double done_at;

static double now_s(void);

static int
locked_attach(struct lws_context *context, int tsi, lws_attach_cb_t cb,
	      lws_system_states_t state, void *opaque,
	      struct lws_attach_item **get)
{
	int r;

	pthread_mutex_lock(&lock);
	r = __lws_system_attach(context, tsi, cb, state, opaque, get);
	pthread_mutex_unlock(&lock);
	return r;
}

static const lws_system_ops_t ops = { .attach = locked_attach };

static void
callback(struct lws_context *context, int tsi, void *opaque)
{
	(void)tsi; (void)opaque;
	if (++ran == want) {
		/* Timed here: the pass that ran it then sleeps in poll. */
		done_at = now_s();
		lws_cancel_service(context);
	}
}

static void *
producer(void *arg)
{
	int i;

	(void)arg;
	pthread_barrier_wait(&go);
	for (i = 0; i < per; i++)
		if (lws_system_get_ops(cx)->attach(cx, 0, callback,
				LWS_SYSTATE_OPERATIONAL, NULL, NULL)) {
			fprintf(stderr, "attach failed\n");
			exit(1);
		}
	return NULL;
}

static double
now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int
cmp(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return x < y ? -1 : x > y;
}

int
main(int argc, char **argv)
{
	struct lws_context_creation_info info;
	int threads = argc > 1 ? atoi(argv[1]) : 4;
	int runs = argc > 3 ? atoi(argv[3]) : 7;
	pthread_t th[64];
	double rate[64];
	int r, t, spins = 0;

	per = argc > 2 ? atoi(argv[2]) : 100000;
	if (threads < 1 || threads > 64 || per < 1 || runs < 1 || runs > 64)
		return 2;
	lws_set_log_level(LLL_ERR, NULL);
	memset(&info, 0, sizeof(info));
	info.port = CONTEXT_PORT_NO_LISTEN;
	info.system_ops = &ops;
	cx = lws_create_context(&info);
	if (!cx)
		return 1;
	/* The context walks itself to OPERATIONAL; let it get there. */
	while (lws_system_get_state_manager(cx)->state < LWS_SYSTATE_OPERATIONAL &&
	       spins++ < 1000)
		lws_service(cx, 0);
	if (lws_system_get_state_manager(cx)->state < LWS_SYSTATE_OPERATIONAL) {
		fprintf(stderr, "context not OPERATIONAL\n");
		return 1;
	}
	for (r = -1; r < runs; r++) { /* one warm-up run */
		double t0;

		want = ran + (long)threads * per;
		pthread_barrier_init(&go, NULL, (unsigned)threads + 1);
		for (t = 0; t < threads; t++)
			pthread_create(&th[t], NULL, producer, NULL);
		t0 = now_s();
		pthread_barrier_wait(&go);
		while (ran < want)
			lws_service(cx, 0);
		if (r >= 0)
			rate[r] = (double)threads * per / (done_at - t0);
		for (t = 0; t < threads; t++)
			pthread_join(th[t], NULL);
		pthread_barrier_destroy(&go);
	}
	qsort(rate, (size_t)runs, sizeof(rate[0]), cmp);
	printf("{\"metric\": \"lws_attach_callbacks_per_s_t%d\", \"value\": %.0f, "
	       "\"unit\": \"callbacks/s\", \"per_thread\": %d, \"runs\": %d}\n",
	       threads, rate[runs / 2], per, runs);
	lws_context_destroy(cx);
	return 0;
}
