/*
 * The subcommands of the dango tool, one function each: argv[0] is the
 * subcommand's name; the return value is the exit status (0 ok, 1 error,
 * 2 usage).
 */
#ifndef DANGO_CLI_H
#define DANGO_CLI_H

int cli_serve(int argc, char **argv);
int cli_put(int argc, char **argv);
int cli_get(int argc, char **argv);
int cli_ls(int argc, char **argv);
int cli_stat(int argc, char **argv);
int cli_rm(int argc, char **argv);
int cli_replay(int argc, char **argv);

#endif /* DANGO_CLI_H */
