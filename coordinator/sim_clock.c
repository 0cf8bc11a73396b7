/* sim_clock.c — the simulated clock. A client's round is its download, its
 * local training and its upload, each at the device's own speed, plus a
 * round trip per message exchange; a dropout never arrives. The round ends
 * when the coordinator has the updates it waits for, or at the deadline:
 * clients that would arrive later are stragglers, and their work is lost.
 * A device is rarely idle: in each round its speed is its nominal speed
 * divided by a load factor drawn log-uniformly in [1, FKD_SIM_LOAD_MAX], so
 * a device that meets the deadline when idle may still straggle.
 * Wall time on this machine plays no part: a round takes as long as it
 * would on the devices. */
#include "fkd_sim.h"

#include <math.h>
#include <stdlib.h>

/* HELLO/WELCOME are already done; a round is TASK out, chunk credits, the
 * UPDATE and its ACK: about three round trips. */
#define ROUND_TRIPS_PER_ROUND 3.0

double fkd_sim_client_seconds(const fkd_sim_device *d, const fkd_sim_work *w, int recompute)
{
    double factor = recompute ? FKD_SIM_RECOMPUTE_FLOP_FACTOR : FKD_SIM_TRAIN_FLOP_FACTOR;
    double compute = w->train_tokens * w->flops_per_token * factor / d->flops;
    return w->down_bytes / d->down_Bps + compute + w->up_bytes / d->up_Bps +
           ROUND_TRIPS_PER_ROUND * d->rtt_s;
}

const char *fkd_sim_outcome_name(int outcome)
{
    static const char *names[FKD_SIM_OUTCOME_COUNT] = {"delivered", "surplus", "straggler",
                                                       "dropout"};
    return outcome >= 0 && outcome < FKD_SIM_OUTCOME_COUNT ? names[outcome] : "?";
}

static int by_finish(const void *a, const void *b)
{
    const fkd_sim_slot *x = a, *y = b;
    if (x->finish_s != y->finish_s) return x->finish_s < y->finish_s ? -1 : 1;
    return x->client - y->client;
}

double fkd_sim_round_plan(fkd_sim_slot *slots, int n, int target, double deadline_s,
                          const fkd_sim_device *devs, const uint8_t *recompute,
                          const fkd_sim_work *w, fkd_rng *rng)
{
    /* Draw for every slot in client order before sorting, so the draws do
     * not depend on the other clients' times. */
    for (int i = 0; i < n; i++) {
        const fkd_sim_device *d = &devs[slots[i].client];
        int gone = fkd_rng_uniform(rng) < d->dropout;
        double load = exp(fkd_rng_uniform(rng) * log(FKD_SIM_LOAD_MAX));
        slots[i].finish_s = gone ? INFINITY
                                 : load * fkd_sim_client_seconds(d, w, recompute[slots[i].client]);
        slots[i].outcome = gone ? FKD_SIM_DROPOUT : FKD_SIM_STRAGGLER;
    }
    qsort(slots, (size_t)n, sizeof *slots, by_finish);
    int delivered = 0;
    double last = 0;
    for (int i = 0; i < n; i++) {
        if (slots[i].outcome == FKD_SIM_DROPOUT) continue;
        if (slots[i].finish_s > deadline_s) continue;
        if (delivered < target) {
            slots[i].outcome = FKD_SIM_DELIVERED;
            delivered++;
            last = slots[i].finish_s;
        } else {
            slots[i].outcome = FKD_SIM_SURPLUS;
        }
    }
    /* The coordinator cannot tell a dropout from a slow client: unless the
     * target arrived or every selected client answered, it waits out the
     * deadline. */
    if (delivered >= target || delivered == n) return last;
    return deadline_s;
}
