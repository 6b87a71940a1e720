"""Running a suite: suite files, the tasks that turn them into records, timing and the machine's state."""
