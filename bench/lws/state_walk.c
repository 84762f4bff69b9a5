/*
 * lwsys's side-by-side bench (scripts/bench --vs-lws): upstream's consent
 * core. An lws_state_manager with N notifiers that all return 0 (allow),
 * walked CONTEXT_CREATED -> OPERATIONAL with lws_state_transition_steps,
 * many times; prints the median ns per walk as one JSON line.
 *
 * Usage: state_walk N [walks-per-sample]
 * Our own program, built against Debian's libwebsockets-dev (4.1.6).
 */
#include <libwebsockets.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static const char *names[] = {
	"UNKNOWN", "CONTEXT_CREATED", "INITIALIZED", "IFACE_COLDPLUG", "DHCP",
	"CPD_PRE_TIME", "TIME_VALID", "CPD_POST_TIME", "POLICY_VALID",
	"REGISTERED", "AUTH1", "AUTH2", "OPERATIONAL", "POLICY_INVALID",
	"CONTEXT_DESTROYING", "AWAITING_MODAL_UPDATING", "MODAL_UPDATING",
};

static long allowed;

static int
allow(struct lws_state_manager *mgr, struct lws_state_notify_link *link,
      int current, int target)
{
	(void)mgr; (void)link; (void)current; (void)target;
	allowed++;
	return 0;
}

static uint64_t
now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static int
cmp(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
	return x < y ? -1 : x > y;
}

int
main(int argc, char **argv)
{
	int n = argc > 1 ? atoi(argv[1]) : 1;
	int per = argc > 2 ? atoi(argv[2]) : 1000;
	enum { SAMPLES = 31 };
	uint64_t sample[SAMPLES];
	lws_state_manager_t mgr;
	lws_state_notify_link_t *links;
	int i, s, w;

	if (n < 1 || n > 100000 || per < 1)
		return 2;
	lws_set_log_level(LLL_ERR, NULL);
	links = calloc((size_t)n, sizeof(*links));
	if (!links)
		return 1;
	memset(&mgr, 0, sizeof(mgr));
	mgr.state_names = names;
	mgr.name = "bench";
	mgr.state = LWS_SYSTATE_CONTEXT_CREATED;
	for (i = 0; i < n; i++) {
		links[i].notify_cb = allow;
		links[i].name = "n";
		lws_state_reg_notifier(&mgr, &links[i]);
	}
	for (s = -3; s < SAMPLES; s++) { /* 3 warm-up samples */
		uint64_t t0 = now_ns();
		for (w = 0; w < per; w++) {
			mgr.state = LWS_SYSTATE_CONTEXT_CREATED;
			if (lws_state_transition_steps(&mgr, LWS_SYSTATE_OPERATIONAL) ||
			    mgr.state != LWS_SYSTATE_OPERATIONAL) {
				fprintf(stderr, "walk did not reach OPERATIONAL\n");
				return 1;
			}
		}
		if (s >= 0)
			sample[s] = (now_ns() - t0) / (uint64_t)per;
	}
	qsort(sample, SAMPLES, sizeof(sample[0]), cmp);
	printf("{\"metric\": \"lws_boot_walk_%d\", \"value\": %.3f, \"unit\": \"us\", "
	       "\"notifiers\": %d, \"transitions\": %d, \"walks\": %d}\n",
	       n, sample[SAMPLES / 2] / 1000.0, n,
	       LWS_SYSTATE_OPERATIONAL - LWS_SYSTATE_CONTEXT_CREATED,
	       per * SAMPLES);
	free(links);
	return allowed > 0 ? 0 : 1;
}
