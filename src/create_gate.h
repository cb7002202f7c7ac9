#ifndef MFMODAL_CREATE_GATE_H
#define MFMODAL_CREATE_GATE_H

/* Pacing of SandboxCreate calls.  Creates go out freely until the server
 * replies RESOURCE_EXHAUSTED.  The gate then halves the rate, and raises it
 * again by a tenth per success until it is unlimited once more, because an
 * additive increase would take minutes to recover from a low rate where this
 * takes seconds.  Jobs wait in a FIFO. */

#include <event2/event.h>

struct create_gate;
struct create_ticket;

typedef void (*create_gate_fn)(void *arg);

struct create_gate *create_gate_new(struct event_base *base);
void create_gate_free(struct create_gate *gate);

/* Run fn(arg) once a create may go out, possibly before this returns.  The
 * ticket is valid until fn runs or create_gate_leave() is called. */
struct create_ticket *create_gate_enter(struct create_gate *gate,
					create_gate_fn fn, void *arg);
void create_gate_leave(struct create_ticket *ticket);

void create_gate_success(struct create_gate *gate);
void create_gate_throttled(struct create_gate *gate);

/* Creates per second now allowed; 0 when unlimited. */
double create_gate_rate(const struct create_gate *gate);
/* Seconds spent under a limit so far. */
double create_gate_throttled_seconds(const struct create_gate *gate);
unsigned create_gate_throttle_events(const struct create_gate *gate);

#endif
