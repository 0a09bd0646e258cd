/*
 * The service's replicator: when Algorithm 1 decides to fetch a prefix
 * from one prefill instance's node to another's, the blocks are copied in
 * the Dango store (dango_store_batch_replicate) to the destination
 * instance's store node, off the HTTP thread.
 *
 * Block hash h is the store key CONDUCTOR_STORE_KEY_PREFIX followed by h
 * as 16 lowercase hex digits (the form store nodes publish KV events in,
 * STORE_KV_EVENTS_PREFIX). Jobs wait in a bounded FIFO
 * (CONDUCTOR_REPLICATE_QUEUE); one thread runs them. Blocks that could not
 * be copied (and were not already there) are taken back out of the
 * destination's entry in the global index, so the scheduler does not count
 * on them; a job dropped because the queue is full is taken back the same
 * way by the caller.
 */
#include "conductor/conductor_int.h"

#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>

#include <dango/store.h>
#include "common/alloc.h"

typedef struct cd_job {
    struct cd_job *next;
    char          *dst_instance;
    char          *dst_node;
    size_t         n;
    uint64_t       keys[];
} cd_job_t;

struct cd_repl {
    dango_conductor_server_t *srv;
    dango_store_client_t     *store;
    char                     *prefix;
    size_t                    queue_max;
    pthread_t                 thread;
    pthread_mutex_t           lock;
    pthread_cond_t            cond;
    cd_job_t                 *head, *tail;
    size_t                    queued;
    int                       stop;
    cd_repl_stats_t           st; /* under lock */
};

static void job_free(cd_job_t *j)
{
    dango_free(j->dst_instance);
    dango_free(j->dst_node);
    dango_free(j);
}

/* Copies one job's blocks; those that failed are taken back. */
static void repl_run(cd_repl_t *r, cd_job_t *j)
{
    size_t    plen = strlen(r->prefix);
    size_t    klen = plen + 17;
    char     *kbuf = dango_malloc(j->n * klen, "conductor_repl_keys");
    char    **keys = dango_malloc(j->n * sizeof(*keys), "conductor_repl_keys");
    int      *res  = dango_malloc(j->n * sizeof(*res), "conductor_repl_res");
    uint64_t *bad  = dango_malloc(j->n * sizeof(*bad), "conductor_repl_bad");
    size_t    nbad = 0, copied = 0, there = 0;
    int       rc = DANGO_ENOMEM, why = DANGO_ENOMEM;

    if ((kbuf != NULL) && (keys != NULL) && (res != NULL) && (bad != NULL)) {
        for (size_t i = 0; i < j->n; i++) {
            keys[i] = kbuf + i * klen;
            snprintf(keys[i], klen, "%s%016" PRIx64, r->prefix, j->keys[i]);
        }
        for (size_t at = 0; at < j->n; at += DANGO_STORE_BATCH_MAX) {
            size_t k = DANGO_MIN(j->n - at, (size_t)DANGO_STORE_BATCH_MAX);

            rc = dango_store_batch_replicate(r->store, k,
                                             (const char *const *)&keys[at],
                                             j->dst_node, &res[at]);
            if (rc != 0) {
                for (size_t i = at; i < at + k; i++) {
                    res[i] = rc;
                }
            }
        }
        for (size_t i = 0; i < j->n; i++) {
            if (res[i] == 0) {
                copied++;
            } else if (res[i] == DANGO_EOBJ_EXISTS) {
                there++;
            } else {
                why         = (nbad == 0) ? res[i] : why;
                bad[nbad++] = j->keys[i];
            }
        }
    } else if (bad != NULL) {
        memcpy(bad, j->keys, j->n * sizeof(*bad));
        nbad = j->n;
    }

    if (nbad > 0) {
        dango_debug("conductor: %zu of %zu blocks not copied to %s (%s): %s",
                    nbad, j->n, j->dst_node, j->dst_instance,
                    dango_strerror(why));
        (void)dango_conductor_server_kv_removed(r->srv, j->dst_instance, bad,
                                                nbad);
    }

    pthread_mutex_lock(&r->lock);
    r->st.jobs_done++;
    r->st.blocks_copied += copied;
    r->st.blocks_present += there;
    r->st.blocks_failed += (bad != NULL) ? nbad : j->n;
    pthread_mutex_unlock(&r->lock);

    dango_free(kbuf);
    dango_free(keys);
    dango_free(res);
    dango_free(bad);
}

static void *repl_thread(void *arg)
{
    cd_repl_t *r = arg;

    pthread_mutex_lock(&r->lock);
    for (;;) {
        cd_job_t *j;

        while (!r->stop && (r->head == NULL)) {
            pthread_cond_wait(&r->cond, &r->lock);
        }
        if (r->stop) {
            break;
        }

        j       = r->head;
        r->head = j->next;
        if (r->head == NULL) {
            r->tail = NULL;
        }
        r->queued--;
        pthread_mutex_unlock(&r->lock);

        repl_run(r, j);
        job_free(j);
        pthread_mutex_lock(&r->lock);
    }
    pthread_mutex_unlock(&r->lock);
    return NULL;
}

int dango__cd_repl_create(dango_conductor_server_t *srv,
                          const dango_config_t *cfg, const char *master,
                          const char *prefix, size_t queue_max, cd_repl_t **r_p)
{
    dango_store_params_t sp;
    cd_repl_t           *r;
    int                  rc;

    r = dango_calloc(1, sizeof(*r), "conductor_repl");
    if (r == NULL) {
        return DANGO_ENOMEM;
    }
    r->srv       = srv;
    r->queue_max = queue_max;
    r->prefix    = dango_strdup(prefix, "conductor_repl");
    if (r->prefix == NULL) {
        dango_free(r);
        return DANGO_ENOMEM;
    }

    memset(&sp, 0, sizeof(sp));
    sp.field_mask   = DANGO_STORE_PARAM_MASTER | DANGO_STORE_PARAM_SEGMENT_SIZE;
    sp.master_addr  = master;
    sp.segment_size = 0;
    rc              = dango_store_client_create(&sp, cfg, &r->store);
    if (rc != 0) {
        dango_error("conductor: store client for %s: %s", master,
                    dango_strerror(rc));
        dango_free(r->prefix);
        dango_free(r);
        return rc;
    }

    pthread_mutex_init(&r->lock, NULL);
    pthread_cond_init(&r->cond, NULL);
    rc = pthread_create(&r->thread, NULL, repl_thread, r);
    if (rc != 0) {
        pthread_cond_destroy(&r->cond);
        pthread_mutex_destroy(&r->lock);
        dango_store_client_destroy(r->store);
        dango_free(r->prefix);
        dango_free(r);
        return dango_err_from_errno(rc);
    }

    dango_info("conductor: replicating hot blocks through the store at %s",
               master);
    *r_p = r;
    return 0;
}

int dango__cd_repl_enqueue(cd_repl_t *r, const char *dst_instance,
                           const char *dst_node, const uint64_t *keys, size_t n)
{
    cd_job_t *j;

    if ((dst_node == NULL) || (n == 0)) {
        return DANGO_EINVAL;
    }

    pthread_mutex_lock(&r->lock);
    if (r->queued >= r->queue_max) {
        r->st.jobs_dropped++;
        pthread_mutex_unlock(&r->lock);
        return DANGO_EAGAIN;
    }
    pthread_mutex_unlock(&r->lock);

    j = dango_calloc(1, sizeof(*j) + n * sizeof(j->keys[0]), "conductor_job");
    if (j == NULL) {
        return DANGO_ENOMEM;
    }
    j->dst_instance = dango_strdup(dst_instance, "conductor_job");
    j->dst_node     = dango_strdup(dst_node, "conductor_job");
    if ((j->dst_instance == NULL) || (j->dst_node == NULL)) {
        job_free(j);
        return DANGO_ENOMEM;
    }
    j->n = n;
    memcpy(j->keys, keys, n * sizeof(keys[0]));

    pthread_mutex_lock(&r->lock);
    if (r->tail != NULL) {
        r->tail->next = j;
    } else {
        r->head = j;
    }
    r->tail = j;
    r->queued++;
    r->st.jobs_queued++;
    pthread_cond_signal(&r->cond);
    pthread_mutex_unlock(&r->lock);
    return 0;
}

void dango__cd_repl_stats(cd_repl_t *r, cd_repl_stats_t *out)
{
    pthread_mutex_lock(&r->lock);
    *out        = r->st;
    out->queued = r->queued;
    pthread_mutex_unlock(&r->lock);
}

void dango__cd_repl_destroy(cd_repl_t *r)
{
    if (r == NULL) {
        return;
    }

    pthread_mutex_lock(&r->lock);
    r->stop = 1;
    pthread_cond_signal(&r->cond);
    pthread_mutex_unlock(&r->lock);
    pthread_join(r->thread, NULL);

    while (r->head != NULL) {
        cd_job_t *j = r->head;

        r->head = j->next;
        job_free(j);
    }
    pthread_cond_destroy(&r->cond);
    pthread_mutex_destroy(&r->lock);
    dango_store_client_destroy(r->store);
    dango_free(r->prefix);
    dango_free(r);
}
