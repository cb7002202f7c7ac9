/* SandboxCreate pacing (see create_gate.h). */
#include "config.h"

#include <stdlib.h>
#include <sys/queue.h>

#include "create_gate.h"
#include "log.h"
#include "util.h"

/* Below this the gate does not go: one create every two seconds. */
#define GATE_MIN_RATE 0.5
/* Above this the limit is lifted. */
#define GATE_MAX_RATE 200.0
#define GATE_HISTORY 64

struct create_ticket {
	struct create_gate *gate;
	create_gate_fn fn;
	void *arg;
	TAILQ_ENTRY(create_ticket) link;
};

struct create_gate {
	struct event_base *base;
	struct event *timer;
	TAILQ_HEAD(, create_ticket) queue;
	double rate;      /* 0: unlimited */
	double last_send;
	double sends[GATE_HISTORY]; /* recent send times, a ring */
	unsigned nsends;
	double limited_since;
	double limited_total;
	unsigned events;
};

static void gate_schedule(struct create_gate *gate);

static double
recent_rate(const struct create_gate *gate, double now)
{
	unsigned count = 0;
	unsigned n = gate->nsends < GATE_HISTORY ? gate->nsends : GATE_HISTORY;

	for (unsigned i = 0; i < n; i++)
		if (now - gate->sends[i] <= 1.0)
			count++;
	return (double)count;
}

static void
gate_release(struct create_gate *gate)
{
	struct create_ticket *t = TAILQ_FIRST(&gate->queue);
	double now = util_now();

	TAILQ_REMOVE(&gate->queue, t, link);
	gate->last_send = now;
	gate->sends[gate->nsends++ % GATE_HISTORY] = now;
	t->fn(t->arg);
	free(t);
}

static void
timer_cb(evutil_socket_t fd, short what, void *arg)
{
	struct create_gate *gate = arg;

	if (!TAILQ_EMPTY(&gate->queue))
		gate_release(gate);
	gate_schedule(gate);
}

/* Release what may go now, and arm the timer for the next one. */
static void
gate_schedule(struct create_gate *gate)
{
	double now, wait;
	struct timeval tv;

	while (!TAILQ_EMPTY(&gate->queue) && gate->rate == 0)
		gate_release(gate);
	if (TAILQ_EMPTY(&gate->queue) || evtimer_pending(gate->timer, NULL))
		return;
	now = util_now();
	wait = gate->last_send + 1.0 / gate->rate - now;
	if (wait < 0)
		wait = 0;
	tv.tv_sec = (time_t)wait;
	tv.tv_usec = (suseconds_t)((wait - (double)tv.tv_sec) * 1e6);
	evtimer_add(gate->timer, &tv);
}

struct create_gate *
create_gate_new(struct event_base *base)
{
	struct create_gate *gate = calloc(1, sizeof(*gate));

	if (gate == NULL)
		return NULL;
	gate->base = base;
	TAILQ_INIT(&gate->queue);
	gate->timer = evtimer_new(base, timer_cb, gate);
	if (gate->timer == NULL) {
		free(gate);
		return NULL;
	}
	return gate;
}

void
create_gate_free(struct create_gate *gate)
{
	struct create_ticket *t;

	if (gate == NULL)
		return;
	while ((t = TAILQ_FIRST(&gate->queue)) != NULL) {
		TAILQ_REMOVE(&gate->queue, t, link);
		free(t);
	}
	event_free(gate->timer);
	free(gate);
}

struct create_ticket *
create_gate_enter(struct create_gate *gate, create_gate_fn fn, void *arg)
{
	struct create_ticket *t = calloc(1, sizeof(*t));

	if (t == NULL)
		return NULL;
	t->gate = gate;
	t->fn = fn;
	t->arg = arg;
	TAILQ_INSERT_TAIL(&gate->queue, t, link);
	/* Deferred to the timer, so fn never runs inside the caller. */
	if (!evtimer_pending(gate->timer, NULL)) {
		struct timeval now = {0, 0};

		if (gate->rate == 0)
			evtimer_add(gate->timer, &now);
		else
			gate_schedule(gate);
	}
	return t;
}

void
create_gate_leave(struct create_ticket *t)
{
	if (t == NULL)
		return;
	TAILQ_REMOVE(&t->gate->queue, t, link);
	free(t);
}

void
create_gate_success(struct create_gate *gate)
{
	double now = util_now();

	if (gate->rate == 0)
		return;
	gate->rate *= 1.1;
	if (gate->rate > GATE_MAX_RATE) {
		gate->rate = 0;
		gate->limited_total += now - gate->limited_since;
		log_info(NULL, "SandboxCreate pace back to unlimited after %.1f s "
			       "of throttling",
			 gate->limited_total);
		gate_schedule(gate);
	}
}

void
create_gate_throttled(struct create_gate *gate)
{
	double now = util_now();
	double base = gate->rate > 0 ? gate->rate : recent_rate(gate, now);

	gate->events++;
	if (gate->rate == 0)
		gate->limited_since = now;
	gate->rate = base / 2 > GATE_MIN_RATE ? base / 2 : GATE_MIN_RATE;
	/* Hold every create for one interval from now. */
	gate->last_send = now;
	log_warn(NULL,
		 "SandboxCreate answered RESOURCE_EXHAUSTED; slowing creates to "
		 "%.1f per second",
		 gate->rate);
	evtimer_del(gate->timer);
	gate_schedule(gate);
}

double
create_gate_rate(const struct create_gate *gate)
{
	return gate->rate;
}

double
create_gate_throttled_seconds(const struct create_gate *gate)
{
	double total = gate->limited_total;

	if (gate->rate != 0)
		total += util_now() - gate->limited_since;
	return total;
}

unsigned
create_gate_throttle_events(const struct create_gate *gate)
{
	return gate->events;
}
