/*
 * lwsys's side-by-side bench (scripts/bench --vs-lws): upstream's idle
 * footprint. Creates a default context (no listener), services it until
 * the system state manager is at OPERATIONAL, services it idle a little
 * longer, then prints its peak RSS (VmHWM) as one JSON line.
 *
 * Our own program, built against Debian's libwebsockets-dev (4.1.6).
 */
#include <libwebsockets.h>
#include <stdio.h>
#include <string.h>

int
main(void)
{
	struct lws_context_creation_info info;
	struct lws_context *cx;
	char line[256];
	long hwm_kb = -1;
	FILE *f;
	int spins = 0;

	lws_set_log_level(LLL_ERR, NULL);
	memset(&info, 0, sizeof(info));
	info.port = CONTEXT_PORT_NO_LISTEN;
	cx = lws_create_context(&info);
	if (!cx)
		return 1;
	while (lws_system_get_state_manager(cx)->state < LWS_SYSTATE_OPERATIONAL &&
	       spins++ < 1000)
		lws_service(cx, -1);
	if (lws_system_get_state_manager(cx)->state < LWS_SYSTATE_OPERATIONAL) {
		fprintf(stderr, "context not OPERATIONAL\n");
		return 1;
	}
	for (spins = 0; spins < 10; spins++)
		lws_service(cx, -1);
	f = fopen("/proc/self/status", "r");
	if (!f)
		return 1;
	while (fgets(line, sizeof(line), f))
		if (!strncmp(line, "VmHWM:", 6))
			sscanf(line + 6, "%ld", &hwm_kb);
	fclose(f);
	lws_context_destroy(cx);
	if (hwm_kb < 0)
		return 1;
	printf("{\"metric\": \"lws_idle_peak_rss\", \"value\": %.2f, \"unit\": \"MiB\", "
	       "\"kind\": \"VmHWM\"}\n", hwm_kb / 1024.0);
	return 0;
}
