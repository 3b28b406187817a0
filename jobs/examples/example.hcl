# This is shoal's example job, written by `shoal job init`. Run it with:
#
#     shoal job run example.hcl
#
# Job files use the syntax of Nomad's job specification (HCL2). shoal reads the
# subset it can run, and refuses anything else with a message naming the line:
# nothing in a job file is ever silently ignored.

# The "job" block is the top of the specification: one job per file. Its label
# ("example") is the job's ID and name, unique within a namespace.
job "example" {
  # Which datacenters may run the job. "*" means any; it is also the default.
  datacenters = ["*"]

  # The scheduler to use: "service" (long-running, kept running), "batch"
  # (runs to completion), "system" (one allocation on every eligible node) or
  # "sysbatch" (a batch job on every eligible node).
  type = "service"

  # Optional placement rules may be placed at the job, group or task level.
  # Runtime values such as node attributes are written as "${...}" strings:
  #
  # constraint {
  #   attribute = "${attr.kernel.name}"
  #   value     = "linux"
  # }

  # A "group" is a set of tasks placed together on one node: one allocation.
  group "web" {
    # How many allocations of this group to run.
    count = 3

    # What to do when a task fails on its node: restart it up to 2 times in
    # 30 minutes, 15 seconds apart, then fail the allocation ("fail") so that
    # it can be rescheduled elsewhere.
    restart {
      attempts = 2
      interval = "30m"
      delay    = "15s"
      mode     = "fail"
    }

    # Ports a group needs are declared here and referred to by label. Without
    # "static", a free port is chosen at placement; "to" is the port inside the
    # task. For example:
    #
    # network {
    #   port "http" {
    #     to = 8080
    #   }
    # }

    # A "task" is one process, run by a driver.
    task "server" {
      # "container" runs an OCI image with runc ("docker" tasks run on it too);
      # "exec" and "raw_exec" run a command directly.
      driver = "container"

      # The driver's options: the image, and the command to run in it. Every
      # task's environment holds NOMAD_* variables (allocation ID, task name,
      # ports); here the shell expands $NOMAD_ALLOC_ID, so each allocation
      # prints its own ID to its log (`shoal alloc logs ALLOC_ID`).
      config {
        image   = "busybox:latest"
        command = "/bin/sh"
        args    = ["-c", "trap 'exit 0' TERM; echo hello from $NOMAD_ALLOC_ID; sleep 3600 & wait"]
      }

      # Environment variables for the task.
      env {
        GREETING = "hello"
      }

      # What the task may use: cpu in MHz, memory in MB. The scheduler places
      # allocations only where these fit; memory is a hard limit.
      resources {
        cpu    = 100
        memory = 64
      }

      # How long to wait after the kill signal before killing the task.
      kill_timeout = "5s"
    }
  }
}
