#ifndef MFMODAL_CLI_H
#define MFMODAL_CLI_H

/* Exit statuses shared by the commands. */
#define CLI_EXIT_OK 0
#define CLI_EXIT_FAILURE 1
#define CLI_EXIT_USAGE 2
#define CLI_EXIT_SIGINT 130
#define CLI_EXIT_SIGTERM 143

/* Options that every command takes, set before the command name. */
struct cli_globals {
	const char *ca_file;
	double timeout;   /* seconds; 0 for the command's default */
	double keepalive; /* seconds between PINGs; 0 for the default */
};

int cli_ping(const struct cli_globals *globals, int argc, char **argv);
int cli_run(const struct cli_globals *globals, int argc, char **argv);

#endif
