/*
 * dango-conductor end to end: the daemon as a child process on 127.0.0.1
 * (port picked by the kernel, read from its "listening on" line), driven
 * over HTTP with libcurl: registration, scheduling from token ids and from
 * block hashes, KV events steering placement, early rejection (429),
 * instances, metrics, and every kind of bad input getting its 4xx.
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#include <curl/curl.h>
#include <jansson.h>

#include "dango_test.h"
#include "http_json.h"
#include "it_proc.h"

#ifndef CONDUCTOR_PATH
#error "CONDUCTOR_PATH must name the dango-conductor binary"
#endif

typedef struct daemon {
    it_proc_t p;
    char      url[256];
} daemon_t;

/* One request; returns the status and the parsed JSON body (or NULL). */
static long http(const daemon_t *d, const char *method, const char *path,
                 const char *body, json_t **json_p, char **text_p)
{
    return test_http(d->url, method, path, body, json_p, text_p);
}

static long post(const daemon_t *d, const char *path, const char *body,
                 json_t **json_p)
{
    return http(d, "POST", path, body, json_p, NULL);
}

/* The status of a POST whose reply must be {"error": "..."}. */
static long post_err(const daemon_t *d, const char *path, const char *body)
{
    json_t *j  = NULL;
    long    st = post(d, path, body, &j);

    assert_non_null(j);
    assert_true(json_is_string(json_object_get(j, "error")));
    json_decref(j);
    return st;
}

static void daemon_start(daemon_t *d, const char *const *extra)
{
    char *argv[16] = {CONDUCTOR_PATH, "--listen", "127.0.0.1:0"};
    char  line[256];
    int   n = 3;

    for (; (extra != NULL) && (*extra != NULL) && (n < 15); extra++) {
        argv[n++] = (char *)*extra;
    }
    argv[n] = NULL;
    it_proc_spawn(&d->p, argv, NULL);
    assert_dango_ok(it_proc_expect(&d->p, "dango-conductor listening on ", line,
                                   sizeof(line), 10000));
    snprintf(d->url, sizeof(d->url), "%s",
             line + strlen("dango-conductor listening on "));
}

static void daemon_stop(daemon_t *d)
{
    int status;

    assert_int_equal(kill(d->p.pid, SIGTERM), 0);
    status   = it_reap(d->p.pid, 10000);
    d->p.pid = 0;
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 0);
}

/* {"token_ids": [first, first+1, ...]} of @n tokens. */
static char *tokens_body(int n, int first)
{
    size_t cap = (size_t)n * 12 + 64, len;
    char  *s   = malloc(cap);

    assert_non_null(s);
    len = (size_t)snprintf(s, cap, "{\"output_length\": 16, \"token_ids\": [");
    for (int i = 0; i < n; i++) {
        len += (size_t)snprintf(s + len, cap - len, "%s%d", i ? "," : "",
                                first + i);
    }
    snprintf(s + len, cap - len, "]}");
    return s;
}

static void conductor_schedules_and_indexes(void **state)
{
    static const char *const extra[] = {"--max-tokens", "8192", "--max-body",
                                        "256k", NULL};
    daemon_t                 d;
    json_t                  *j;
    char                    *body, *text;

    daemon_start(&d, extra);

    /* Nothing registered yet. */
    body = tokens_body(1100, 0);
    assert_int_equal(post_err(&d, "/schedule", body), 503);

    assert_int_equal(post(&d, "/register",
                          "{\"instance_id\": \"p0\", \"role\": \"prefill\", "
                          "\"cache_blocks\": 100, \"node\": \"node-a\"}",
                          NULL),
                     200);
    assert_int_equal(post(&d, "/register",
                          "{\"instance_id\": \"p1\", \"role\": \"prefill\", "
                          "\"cache_blocks\": 100}",
                          NULL),
                     200);
    assert_int_equal(post(&d, "/register",
                          "{\"instance_id\": \"d0\", \"role\": \"decode\"}",
                          &j),
                     200);
    assert_string_equal(json_string_value(json_object_get(j, "status")),
                        "registered");
    json_decref(j);

    /* First request: no prefix anywhere, lowest id wins. */
    assert_int_equal(post(&d, "/schedule", body, &j), 200);
    assert_string_equal(json_string_value(json_object_get(j, "prefill")), "p0");
    assert_string_equal(json_string_value(json_object_get(j, "decode")), "d0");
    assert_int_equal(json_integer_value(json_object_get(j, "blocks")), 2);
    assert_int_equal(json_integer_value(json_object_get(j, "matched_blocks")),
                     0);
    assert_true(json_real_value(json_object_get(j, "predicted_ttft_s")) > 0);
    json_decref(j);

    /* The same prompt again: p0 holds both blocks but is busy with the
     * first request, so Algorithm 1 has idle p1 fetch them (a transfer of
     * milliseconds instead of a wait of about 0.13 s). */
    assert_int_equal(post(&d, "/schedule", body, &j), 200);
    assert_string_equal(json_string_value(json_object_get(j, "prefill")), "p1");
    assert_int_equal(json_integer_value(json_object_get(j, "matched_blocks")),
                     2);
    assert_int_equal(json_integer_value(json_object_get(j, "transfer_blocks")),
                     2);
    assert_string_equal(json_string_value(json_object_get(j, "transfer_from")),
                        "p0");
    assert_int_equal(json_integer_value(json_object_get(j, "matched_tokens")),
                     1024);
    json_decref(j);
    free(body);

    /* KV events put a prefix on p1: a request for it goes there. */
    assert_int_equal(post(&d, "/kv_events",
                          "{\"instance_id\": \"p1\", \"events\": ["
                          "{\"type\": \"stored\", \"block_hashes\": "
                          "[\"0xabc\", 5, 6]},"
                          "{\"type\": \"removed\", \"block_hashes\": [6]}]}",
                          &j),
                     200);
    assert_int_equal(json_integer_value(json_object_get(j, "stored")), 3);
    assert_int_equal(json_integer_value(json_object_get(j, "removed")), 1);
    json_decref(j);
    assert_int_equal(post(&d, "/schedule",
                          "{\"block_hashes\": [\"ABC\", 5, 6], "
                          "\"input_length\": 1300, \"request_id\": \"r1\"}",
                          &j),
                     200);
    assert_string_equal(json_string_value(json_object_get(j, "prefill")), "p1");
    assert_string_equal(json_string_value(json_object_get(j, "request_id")),
                        "r1");
    assert_int_equal(json_integer_value(json_object_get(j, "local_blocks")), 2);
    json_decref(j);

    /* Release a reservation once. */
    assert_int_equal(
        post(&d, "/complete", "{\"decode\": \"d0\", \"tokens\": 1301}", NULL),
        200);
    assert_int_equal(
        post_err(&d, "/complete", "{\"decode\": \"d0\", \"tokens\": 1301}"),
        404);

    /* Instances and metrics. */
    assert_int_equal(http(&d, "GET", "/instances", NULL, &j, NULL), 200);
    assert_int_equal(json_array_size(j), 3);
    assert_string_equal(
        json_string_value(json_object_get(json_array_get(j, 0), "node")),
        "node-a");
    json_decref(j);
    assert_int_equal(http(&d, "GET", "/metrics", NULL, NULL, &text), 200);
    assert_non_null(strstr(text, "dango_conductor_scheduled_total 3\n"));
    assert_non_null(strstr(text, "dango_conductor_replications_total 1\n"));
    assert_non_null(strstr(text, "dango_conductor_instances{role=\"prefill\"} "
                                 "2\n"));
    assert_non_null(strstr(
        text, "dango_conductor_instance_cached_blocks{instance=\"p1\"}"));
    free(text);

    /* Deregistration. */
    assert_int_equal(post(&d, "/deregister", "{\"instance_id\": \"p1\"}", NULL),
                     200);
    assert_int_equal(post_err(&d, "/deregister", "{\"instance_id\": \"p1\"}"),
                     404);
    assert_int_equal(post_err(&d, "/kv_events",
                              "{\"instance_id\": \"p1\", \"events\": "
                              "[{\"type\": \"cleared\"}]}"),
                     404);
    daemon_stop(&d);
}

static void conductor_rejects_bad_input(void **state)
{
    static const char *const extra[] = {"--max-tokens", "4096", "--max-body",
                                        "64k", NULL};
    daemon_t                 d;
    char                    *body, *big;

    daemon_start(&d, extra);
    assert_int_equal(post(&d, "/register",
                          "{\"instance_id\": \"p0\", \"role\": \"prefill\"}",
                          NULL),
                     200);
    assert_int_equal(post(&d, "/register",
                          "{\"instance_id\": \"d0\", \"role\": \"decode\"}",
                          NULL),
                     200);

    /* Registration. */
    assert_int_equal(post_err(&d, "/register",
                              "{\"instance_id\": \"p0\", \"role\": "
                              "\"prefill\"}"),
                     409);
    assert_int_equal(post_err(&d, "/register",
                              "{\"instance_id\": \"x\", \"role\": \"both\"}"),
                     400);
    assert_int_equal(post_err(&d, "/register", "{\"role\": \"decode\"}"), 400);
    assert_int_equal(post_err(&d, "/register",
                              "{\"instance_id\": \"x\", \"role\": "
                              "\"prefill\", \"cache_blocks\": -1}"),
                     400);

    /* Bodies. */
    assert_int_equal(post_err(&d, "/schedule", "{\"token_ids\": [1, 2"), 400);
    assert_int_equal(post_err(&d, "/schedule", ""), 400);
    assert_int_equal(post_err(&d, "/schedule", "[1, 2, 3]"), 400);
    assert_int_equal(post_err(&d, "/schedule", "{}"), 400);
    assert_int_equal(post_err(&d, "/schedule", "{\"token_ids\": []}"), 400);
    assert_int_equal(post_err(&d, "/schedule", "{\"token_ids\": [1, -1]}"),
                     400);
    assert_int_equal(
        post_err(&d, "/schedule", "{\"token_ids\": [1, 4294967296]}"), 400);
    assert_int_equal(post_err(&d, "/schedule",
                              "{\"token_ids\": [1], \"block_hashes\": [1], "
                              "\"input_length\": 10}"),
                     400);
    assert_int_equal(post_err(&d, "/schedule", "{\"block_hashes\": [1, 2]}"),
                     400);
    assert_int_equal(post_err(&d, "/schedule",
                              "{\"block_hashes\": [1, 2, 3], "
                              "\"input_length\": 600}"),
                     400);
    assert_int_equal(post_err(&d, "/schedule",
                              "{\"block_hashes\": [\"0x12345678123456789\"], "
                              "\"input_length\": 600}"),
                     400);
    assert_int_equal(post_err(&d, "/schedule",
                              "{\"block_hashes\": [1], \"input_length\": 600, "
                              "\"output_length\": \"many\"}"),
                     400);

    /* Oversized: tokens above CONDUCTOR_MAX_TOKENS, body above MAX_BODY. */
    body = tokens_body(5000, 0);
    assert_int_equal(post_err(&d, "/schedule", body), 413);
    free(body);
    big = tokens_body(20000, 1000000);
    assert_int_equal(post_err(&d, "/schedule", big), 413);
    free(big);
    assert_int_equal(post_err(&d, "/schedule",
                              "{\"block_hashes\": [1], \"input_length\": "
                              "100000}"),
                     413);

    /* KV events: a bad event anywhere changes nothing. */
    assert_int_equal(post_err(&d, "/kv_events",
                              "{\"instance_id\": \"p0\", \"events\": ["
                              "{\"type\": \"stored\", \"block_hashes\": [7]},"
                              "{\"type\": \"moved\", \"block_hashes\": [7]}]}"),
                     400);
    assert_int_equal(
        post_err(&d, "/kv_events", "{\"instance_id\": \"p0\", \"events\": []}"),
        400);
    assert_int_equal(post_err(&d, "/kv_events",
                              "{\"instance_id\": \"d0\", \"events\": "
                              "[{\"type\": \"cleared\"}]}"),
                     404);
    {
        json_t *j;

        assert_int_equal(post(&d, "/schedule",
                              "{\"block_hashes\": [7], \"input_length\": 512}",
                              &j),
                         200);
        assert_int_equal(
            json_integer_value(json_object_get(j, "matched_blocks")), 0);
        json_decref(j);
    }

    /* Paths and methods. */
    assert_int_equal(http(&d, "GET", "/nope", NULL, NULL, NULL), 404);
    assert_int_equal(http(&d, "GET", "/schedule", NULL, NULL, NULL), 405);
    assert_int_equal(post_err(&d, "/metrics", "{}"), 405);
    assert_int_equal(http(&d, "GET", "/health", NULL, NULL, NULL), 200);
    daemon_stop(&d);
}

static void conductor_rejects_early_with_429(void **state)
{
    static const char *const extra[] = {"--ttft-slo", "1ms", NULL};
    daemon_t                 d;
    json_t                  *j;
    char                    *body = tokens_body(4000, 0);

    daemon_start(&d, extra);
    assert_int_equal(post(&d, "/register",
                          "{\"instance_id\": \"p0\", \"role\": \"prefill\"}",
                          NULL),
                     200);
    assert_int_equal(post(&d, "/register",
                          "{\"instance_id\": \"d0\", \"role\": \"decode\"}",
                          NULL),
                     200);
    assert_int_equal(post(&d, "/schedule", body, &j), 429);
    assert_string_equal(json_string_value(json_object_get(j, "reason")),
                        "ttft_slo");
    assert_true(json_real_value(json_object_get(j, "predicted_ttft_s")) >
                0.001);
    json_decref(j);
    free(body);
    daemon_stop(&d);
}

static void conductor_refuses_bad_options(void **state)
{
    char     *argv[] = {CONDUCTOR_PATH, "--threshold", "0.5", NULL};
    it_proc_t p;
    int       status;

    it_proc_spawn(&p, argv, NULL);
    status = it_reap(p.pid, 10000);
    p.pid  = 0;
    assert_true(WIFEXITED(status));
    assert_int_not_equal(WEXITSTATUS(status), 0);
}

static int teardown(void **state)
{
    it_proc_kill_all();
    return 0;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(conductor_schedules_and_indexes, teardown),
        cmocka_unit_test_teardown(conductor_rejects_bad_input, teardown),
        cmocka_unit_test_teardown(conductor_rejects_early_with_429, teardown),
        cmocka_unit_test_teardown(conductor_refuses_bad_options, teardown),
    };

    curl_global_init(CURL_GLOBAL_DEFAULT);
    return cmocka_run_group_tests(tests, NULL, NULL);
}
