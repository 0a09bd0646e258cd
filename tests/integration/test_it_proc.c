/*
 * Tests of the child-process helpers the integration tests stand on
 * (it_proc.h): line protocol, timeouts, end of output, exit status,
 * environment, killing and reaping. Children are /bin/sh and /bin/cat.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "dango_test.h"

#include "it_proc.h"

static void cat_echoes_commands(void **state)
{
    char      reply[64];
    char     *argv[] = {"/bin/cat", NULL};
    it_proc_t p;

    (void)state;
    it_proc_spawn(&p, argv, NULL);
    assert_true(p.pid > 0);
    assert_int_equal(0, it_proc_cmd(&p, "hello", reply, sizeof(reply), 5000));
    assert_string_equal("hello", reply);
    assert_int_equal(0,
                     it_proc_cmd(&p, "two words", reply, sizeof(reply), 5000));
    assert_string_equal("two words", reply);
    /* Closing stdin ends cat: a clean exit. */
    {
        int status = it_proc_stop(&p, 5000);

        assert_true(WIFEXITED(status));
        assert_int_equal(0, WEXITSTATUS(status));
    }

    assert_int_equal(0, p.pid);
    assert_int_equal(-1, p.in_fd);
}

static void read_times_out_then_kill(void **state)
{
    char      line[64];
    char     *argv[] = {"/bin/sh", "-c", "sleep 30", NULL};
    it_proc_t p;

    (void)state;
    it_proc_spawn(&p, argv, NULL);
    assert_dango_err(DANGO_ETIMEDOUT,
                     it_proc_read_line(&p, line, sizeof(line), 100));
    it_proc_kill(&p);
    assert_int_equal(0, p.pid);
}

static void expect_skips_and_eof_is_reset(void **state)
{
    char  line[64];
    char *argv[] = {"/bin/sh", "-c", "echo noise; echo READY x; exit 3", NULL};
    it_proc_t p;
    int       status;

    (void)state;
    it_proc_spawn(&p, argv, NULL);
    assert_int_equal(0, it_proc_expect(&p, "READY ", line, sizeof(line), 5000));
    assert_string_equal("READY x", line);
    assert_dango_err(DANGO_ECONNRESET,
                     it_proc_read_line(&p, line, sizeof(line), 5000));
    status = it_proc_stop(&p, 5000);
    assert_true(WIFEXITED(status));
    assert_int_equal(3, WEXITSTATUS(status));
}

static void environment_added_and_token_stripped(void **state)
{
    char        line[128];
    char       *argv[] = {"/bin/sh", "-c",
                          "echo \"$IT_FOO/${DANGO_CLUSTER_TOKEN-unset}/$IT_KEEP\"",
                          NULL};
    const char *add[]  = {"IT_FOO=bar", NULL};
    it_proc_t   p;

    (void)state;
    setenv("DANGO_CLUSTER_TOKEN", "secret", 1);
    setenv("IT_FOO", "old", 1);
    setenv("IT_KEEP", "kept", 1);
    it_proc_spawn(&p, argv, add);
    assert_int_equal(0, it_proc_read_line(&p, line, sizeof(line), 5000));
    assert_string_equal("bar/unset/kept", line);
    it_proc_stop(&p, 5000);
    unsetenv("DANGO_CLUSTER_TOKEN");
}

static void missing_program_exits_127(void **state)
{
    char     *argv[] = {"/nonexistent/program", NULL};
    it_proc_t p;
    int       status;

    (void)state;
    it_proc_spawn(&p, argv, NULL);
    status = it_proc_stop(&p, 5000);
    assert_true(WIFEXITED(status));
    assert_int_equal(127, WEXITSTATUS(status));
}

static void kill_all_reaps_leftovers(void **state)
{
    char     *argv[] = {"/bin/sh", "-c", "sleep 30", NULL};
    it_proc_t a, b;

    (void)state;
    it_proc_spawn(&a, argv, NULL);
    it_proc_spawn(&b, argv, NULL);
    it_proc_kill_all();
    /* Both were killed and reaped: the pids name no process any more. */
    assert_int_equal(-1, kill(a.pid, 0));
    assert_int_equal(ESRCH, errno);
    assert_int_equal(-1, kill(b.pid, 0));
    assert_int_equal(ESRCH, errno);
    close(a.in_fd);
    close(a.out_fd);
    close(b.in_fd);
    close(b.out_fd);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(cat_echoes_commands),
        cmocka_unit_test(read_times_out_then_kill),
        cmocka_unit_test(expect_skips_and_eof_is_reset),
        cmocka_unit_test(environment_added_and_token_stripped),
        cmocka_unit_test(missing_program_exits_127),
        cmocka_unit_test(kill_all_reaps_leftovers),
    };

    signal(SIGPIPE, SIG_IGN);
    return cmocka_run_group_tests(tests, NULL, NULL);
}
